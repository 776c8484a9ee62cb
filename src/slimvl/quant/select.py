"""Choose a linear kernel per layer shape by measuring the usable candidates on this machine."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from slimvl.quant.choices import store_choice, stored_choice
from slimvl.quant.kernels import FALLBACK, KERNELS, ActQuant, LinearKernel, usable_kernels

_TIE_TOLERANCE = 1.05  # kernels within 5% of the best at a batch size are tied
# one-row timings cycle through this much weight: more than a laptop's last-level cache
_COLD_BYTES = 64 << 20
_MAX_COPIES = 32  # a small layer's copies stay cached, as a small model's whole weights do when it decodes


@dataclass(frozen=True)
class KernelChoice:
    name: str
    timings_ms: dict[str, dict[int, float]]  # kernel -> {batch size M: fastest ms}


_CACHE: dict[tuple[Any, ...], KernelChoice] = {}  # per process: a model's same-shape layers measure once


def time_kernel(
    kernel: LinearKernel, states: Sequence[Any], x: torch.Tensor, act: ActQuant | None, repeats: int
) -> float:
    """Fastest of ``repeats`` passes through ``states`` (prepared copies of one layer's weight), in ms
    per call, after one warm-up pass.

    The minimum, not the median: other processes only ever add time, and on a busy 2-core machine
    the median of a sub-millisecond call measures the scheduler, not the kernel. Several copies make
    each call read its weight from memory, as decoding does, instead of from a cache that one layer's
    repeated calls keep warm: a kernel can win hot and lose cold (oneDNN against fbgemm here, 2048x2048
    at one row: 85 vs 45 us hot, 262 vs 190 us cold).
    """
    for state in states:
        kernel.run(state, x, act)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for state in states:
            kernel.run(state, x, act)
        times.append((time.perf_counter() - start) * 1e3 / len(states))
    return min(times)


def _copies(shape: tuple[int, int], rows: int) -> int:
    """Weight copies to time ``rows`` rows with: enough to stream ``_COLD_BYTES`` at one row (decode),
    at most ``_MAX_COPIES``; one at more rows (compute-bound: each weight byte serves every row)."""
    if rows > 1:
        return 1
    return min(_MAX_COPIES, max(1, -(-_COLD_BYTES // (shape[0] * shape[1]))))


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
    is given; results are cached per shape, dtype, activation kind, candidates and batch sizes, in the
    process and on the machine (`slimvl.quant.choices`).
    """
    usable = usable_kernels(shape, act, float_bits=float_bits)
    names = [n for n in (KERNELS if candidates is None else candidates) if n in usable]
    if not names:
        names = [FALLBACK]
    act_key = None if act is None else (act.kind, act.qmax)
    key = (tuple(shape), dtype, act_key, tuple(names), tuple(batch_sizes))
    if key in _CACHE:
        return _CACHE[key]
    stored_key = [list(shape), str(dtype), act_key, names, list(batch_sizes)]
    stored = stored_choice(stored_key)
    if stored is not None and stored[0] in names:
        _CACHE[key] = KernelChoice(*stored)
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
            q, scale = weight
            states = [kernel.prepare(q if i == 0 else q.clone(), scale) for i in range(_copies(shape, m))]
            timings[name][m] = time_kernel(kernel, states, x, act, repeats)
            del states  # one kernel's copies at a time
        best = min(timings[n][m] for n in remaining)
        remaining = [n for n in remaining if timings[n][m] <= best * _TIE_TOLERANCE]
        if len(remaining) == 1:
            break
    choice = KernelChoice(min(remaining, key=lambda n: timings[n][m]), timings)
    _CACHE[key] = choice
    store_choice(stored_key, choice.name, timings)
    return choice
