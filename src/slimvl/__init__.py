"""slimvl: Qwen3-VL fast and small on a laptop CPU, with every optimization measured.

The public names are imported on first use, so that the ``slimvl`` command can re-execute itself
(`slimvl.hugepages`) before PyTorch and transformers are loaded.
"""

from __future__ import annotations

import importlib
from typing import Any

from slimvl.config.sections import sections as _sections  # the standard library and dataclasses only

__version__ = "0.1.0"

_MODULE_OF = {
    "SlimModel": "slimvl.api",
    "generate": "slimvl.api",
    "load": "slimvl.api",
    "optimize": "slimvl.api",
    "Recipe": "slimvl.config",
    **{section.config.__name__: "slimvl.config" for section in _sections()},  # each optimization's config
    "InputError": "slimvl.errors",
    "ModelLoadError": "slimvl.errors",
    "SlimvlError": "slimvl.errors",
}

__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    if name not in _MODULE_OF:
        raise AttributeError(f"module 'slimvl' has no attribute {name!r}")
    value = getattr(importlib.import_module(_MODULE_OF[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_MODULE_OF])
