"""Decode step time with the weights in 2 MB pages against 4 KB pages, in one process, step by step.

These VMs' read bandwidth switches between phases (~33 and ~60 GB/s) every few seconds to minutes, so
comparing processes started with and without `glibc.malloc.hugetlb=1` (`slimvl.hugepages`) mostly
compares phases. Instead this loads the optimized directory twice in one process started WITHOUT the
tunable (copy A: 4 KB pages), then collapses the memory the second load added into huge pages with
`madvise(MADV_HUGEPAGE)` + `madvise(MADV_COLLAPSE)` (Linux 6.1+; copy B), and alternates single decode
steps of A and B (`LeanDecoder.step`, each with its own KV cache in 4 KB pages), so that every pair of
steps shares the machine's phase. Reports the per-step ratio B ÷ A.

    .venv/bin/python benchmarks/huge_pages_ab.py out/2b-int8 --steps 300 --out benchmarks/results/huge_pages_ab_2b_int8.json
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import statistics
import time
from pathlib import Path

import torch

import slimvl
from slimvl.atomic import write_text_atomic
from slimvl.bench.scenario import QUESTION
from slimvl.data import make_example
from slimvl.hugepages import huge_page_bytes
from slimvl.models.decode import StaticKVCache
from slimvl.models.steps import build_sequence, encode_images, prefill
from slimvl.monitor import machine_info

MADV_HUGEPAGE, MADV_COLLAPSE = 14, 25
HUGE_PAGE = 2 << 20


def anonymous_mappings() -> dict[int, int]:
    """start -> end of this process's writable anonymous mappings (the heap included)."""
    out = {}
    for line in Path("/proc/self/maps").read_text().splitlines():
        parts = line.split()
        path = parts[5] if len(parts) > 5 else ""
        if parts[1].startswith("rw") and path in ("", "[heap]"):
            start, end = (int(x, 16) for x in parts[0].split("-"))
            out[start] = end
    return out


def collapse_added(before: dict[int, int]) -> int:
    """Collapse into huge pages what was mapped since `before` (new mappings, and the part of a grown
    one past its old end); returns the bytes collapsed."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    collapsed = 0
    for start, end in anonymous_mappings().items():
        first = before.get(start, start)
        if before.get(start) == end:
            continue
        lo, hi = -(-first // HUGE_PAGE) * HUGE_PAGE, end // HUGE_PAGE * HUGE_PAGE
        if hi - lo < HUGE_PAGE:
            continue
        libc.madvise(lo, hi - lo, MADV_HUGEPAGE)
        if libc.madvise(lo, hi - lo, MADV_COLLAPSE) == 0:
            collapsed += hi - lo
    return collapsed


@torch.inference_mode()
def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model_dir")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if "hugetlb" in os.environ.get("GLIBC_TUNABLES", ""):
        raise SystemExit(
            "start this without glibc.malloc.hugetlb in GLIBC_TUNABLES: copy A must be in 4 KB pages"
        )
    torch.set_num_threads(args.threads)
    small = slimvl.load(args.model_dir).pipeline
    before = anonymous_mappings()
    huge = slimvl.load(args.model_dir).pipeline
    start = time.perf_counter()
    collapsed = collapse_added(before)
    collapse_s = time.perf_counter() - start
    print(
        f"collapsed {collapsed / 1e6:.0f} MB in {collapse_s:.1f} s; AnonHugePages {huge_page_bytes() / 1e6:.0f} MB"
    )

    inputs = small.preprocessor([make_example(1, (448, 448)).image], QUESTION)
    seq = build_sequence(small.model, inputs, encode_images(small.model, inputs))
    state = {}
    for name, pipeline in (("4k", small), ("huge", huge)):
        cache = StaticKVCache.allocate(
            pipeline.model.config.text_config, seq.length + args.steps + 1, torch.float32
        )
        logits, filled = prefill(pipeline.model, seq, cache.prefill_cache())
        cache.take_length(filled)
        state[name] = [pipeline, cache, logits[0, -1].argmax(), seq.next_position]
    times: dict[str, list[float]] = {"4k": [], "huge": []}
    for step in range(args.steps):
        for name in ("4k", "huge") if step % 2 == 0 else ("huge", "4k"):
            pipeline, cache, token, position = state[name]
            begin = time.perf_counter()
            logits = pipeline.decoder.step(token, position, cache)
            times[name].append((time.perf_counter() - begin) * 1000)
            state[name][2:] = [logits[0].argmax(), position + 1]
    a, b = times["4k"][args.warmup :], times["huge"][args.warmup :]
    ratios = [y / x for x, y in zip(a, b, strict=True)]
    summary = {
        "step_ms_4k": statistics.median(a),
        "step_ms_huge": statistics.median(b),
        "huge_over_4k_median": statistics.median(ratios),
        "huge_over_4k_quartiles": statistics.quantiles(ratios, n=4),
        "huge_over_4k_by_block_of_50": [
            statistics.median(b[i : i + 50]) / statistics.median(a[i : i + 50])
            for i in range(0, len(a) - 49, 50)
        ],
        "collapsed_mb": collapsed / 1e6,
        "collapse_s": collapse_s,
    }
    print(json.dumps(summary, indent=1))
    if args.out:
        record = {"args": vars(args), "machine": machine_info(), "summary": summary, "step_ms": times}
        write_text_atomic(Path(args.out), json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
