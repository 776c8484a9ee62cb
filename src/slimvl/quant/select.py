"""Choose a linear kernel per layer shape by measuring the usable candidates on this machine."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from slimvl.quant.kernels import FALLBACK, KERNELS, ActQuant, LinearKernel, usable_kernels

_TIE_TOLERANCE = 1.05  # kernels within 5% of the best at a batch size are tied


@dataclass(frozen=True)
class KernelChoice:
    name: str
    timings_ms: dict[str, dict[int, float]]  # kernel -> {batch size M: fastest ms}


_CACHE: dict[tuple[Any, ...], KernelChoice] = {}  # per process: a model's same-shape layers measure once


def time_kernel(
    kernel: LinearKernel, state: Any, x: torch.Tensor, act: ActQuant | None, repeats: int
) -> float:
    """Fastest of ``repeats`` calls of ``run`` in ms, after one warm-up call.

    The minimum, not the median: other processes only ever add time, and on a busy 2-core machine
    the median of a sub-millisecond call measures the scheduler, not the kernel.
    """
    kernel.run(state, x, act)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        kernel.run(state, x, act)
        times.append((time.perf_counter() - start) * 1e3)
    return min(times)


def select_kernel(
    shape: tuple[int, int],
    act: ActQuant | None,
    candidates: Sequence[str] | None = None,
    batch_sizes: Sequence[int] = (1, 256),
    repeats: int = 5,
    dtype: torch.dtype = torch.float32,
    weight: tuple[torch.Tensor, torch.Tensor] | None = None,
    float_bits: int = 16,
) -> KernelChoice:
    """Measure the usable ``candidates`` on an (N, K) = ``shape`` layer and pick the fastest.

    The first batch size decides (M=1 for decoder layers, which decode runs once per token); only the
    kernels within 5% of the best there are timed at the next one (M=256: prefill), which ranks them.
    One kernel per layer, not one per phase: a second packed copy of the weight would cost its memory.
    Only kernels that compute the layer's numerics compete (``usable_kernels``; ``float_bits``: the
    fewest bits a weight-only layer's activations may keep). Random data unless ``weight`` (q, scale)
    is given; results are cached per shape, dtype, activation kind, candidates and batch sizes.
    """
    usable = usable_kernels(shape, act, float_bits=float_bits)
    names = [n for n in (KERNELS if candidates is None else candidates) if n in usable]
    if not names:
        names = [FALLBACK]
    act_key = None if act is None else (act.kind, act.qmax)
    key = (tuple(shape), dtype, act_key, tuple(names), tuple(batch_sizes))
    if key in _CACHE:
        return _CACHE[key]
    n_out, n_in = shape
    if weight is None:
        generator = torch.Generator().manual_seed(0)
        q = torch.randint(-127, 128, (n_out, n_in), dtype=torch.int8, generator=generator)
        weight = q, torch.rand(n_out, generator=generator) * 1e-2 + 1e-3
    timings: dict[str, dict[int, float]] = {name: {} for name in names}
    remaining = names
    for m in batch_sizes:
        x = torch.randn(m, n_in).to(dtype)
        for name in remaining:
            kernel = KERNELS[name]
            state = kernel.prepare(*weight)  # one packed copy at a time
            timings[name][m] = time_kernel(kernel, state, x, act, repeats)
            del state
        best = min(timings[n][m] for n in remaining)
        remaining = [n for n in remaining if timings[n][m] <= best * _TIE_TOLERANCE]
        if len(remaining) == 1:
            break
    choice = KernelChoice(min(remaining, key=lambda n: timings[n][m]), timings)
    _CACHE[key] = choice
    return choice
