"""The int4 GEMM: a C++ extension (AVX2, `csrc/int4_gemm.cpp`) compiled with PyTorch's
`cpp_extension` on first use and cached by PyTorch (``TORCH_EXTENSIONS_DIR``), or `int4_math.linear` in
plain PyTorch where the CPU lacks AVX2, no compiler is found or ``SLIMVL_INT4_KERNEL=python``.

Both compute the same integers (`int4_math.integer_dot`); the extension's speed is what decode needs:
0.53 bytes per weight read against int8's 1.
"""

from __future__ import annotations

import functools
import hashlib
import os
import warnings
from pathlib import Path
from types import ModuleType

import torch

from slimvl.precision import int4_math
from slimvl.precision.int4_math import Int4Weight

_SOURCE = Path(__file__).parent / "csrc" / "int4_gemm.cpp"
KERNEL_ENV = "SLIMVL_INT4_KERNEL"  # "python": never build or use the extension


def kernel_name() -> str:
    """``avx2`` where the extension runs, else ``python``."""
    return "avx2" if extension() is not None else "python"


@functools.cache
def extension() -> ModuleType | None:
    if os.environ.get(KERNEL_ENV, "") == "python":
        return None
    if torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"):
        return None
    from torch.utils import cpp_extension

    digest = hashlib.sha256(_SOURCE.read_bytes()).hexdigest()[:12]
    try:
        return cpp_extension.load(
            name=f"slimvl_int4_{digest}",
            sources=[str(_SOURCE)],
            # no FMA contraction: both GEMM paths then round their float outputs the same way
            extra_cflags=["-O3", "-mavx2", "-mfma", "-fopenmp", "-ffp-contract=off"],
            extra_ldflags=["-fopenmp"],
            verbose=False,
        )
    except (OSError, RuntimeError, ImportError) as exc:  # no compiler, no ninja, a build error
        warnings.warn(
            f"int4 kernel not built ({str(exc).splitlines()[0]}); using plain PyTorch", stacklevel=2
        )
        return None


def linear(x: torch.Tensor, weight: Int4Weight, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``x`` (M, K) float32 through the int4 weight: (M, N) float32."""
    ext = extension()
    if ext is None:
        return int4_math.linear(x, weight, bias)
    return ext.linear(x, weight.codes, weight.mult, weight.offsets, weight.row_scale, bias)


def integer_dot(x: torch.Tensor, weight: Int4Weight) -> torch.Tensor:
    """The kernel's int32 dots for ``x`` (M, K), as computed by the extension (tests compare them with
    `int4_math.integer_dot`); needs the extension."""
    ext = extension()
    if ext is None:
        raise RuntimeError("the int4 extension is not available")
    return ext.gemm_int(x.float().contiguous(), weight.codes, weight.mult, weight.offsets)
