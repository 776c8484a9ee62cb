"""slimvl: Qwen3-VL fast and small on a laptop CPU, with every optimization measured."""

from slimvl.api import SlimModel, generate, load, optimize
from slimvl.config import (
    AdaptivePrecisionConfig,
    INT8QuantizationConfig,
    PruningConfig,
    Recipe,
    SparsificationConfig,
)
from slimvl.errors import InputError, ModelLoadError, SlimvlError

__version__ = "0.1.0"

__all__ = [
    "AdaptivePrecisionConfig",
    "INT8QuantizationConfig",
    "InputError",
    "ModelLoadError",
    "PruningConfig",
    "Recipe",
    "SlimModel",
    "SlimvlError",
    "SparsificationConfig",
    "generate",
    "load",
    "optimize",
]
