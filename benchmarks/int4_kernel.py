"""slimvl's int4 kernel against fbgemm int8 (and ATen's int4) on the 2B decoder's linear shapes.

At prefill size the int8-expansion + `at::_int_mm` path (`int4_int_mm`) is timed too. One "pass" runs the
28 layers' qkv (4096×2048), o (2048×2048), gate-up (12288×2048) and down
(2048×6144) linears once, as a decode step (M=1) or a prefill (M=--prefill-rows). Kernels alternate
within each round (the order flips every round), so both see the same bandwidth phase; the report gives
per-kernel medians with min-max and the median of the per-round ratios. Weights are random codes: a
kernel's speed does not depend on their values. Writes JSON.

    .venv/bin/python benchmarks/int4_kernel.py --rounds 9 --out benchmarks/results/int4_kernel_2b.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

SHAPES = [(4096, 2048), (2048, 2048), (12288, 2048), (2048, 6144)]
LAYERS = 28


def _int4_layers(torch, int4_math):
    layers = []
    for _ in range(LAYERS):
        for n, k in SHAPES:
            codes = torch.randint(0, 16, (n, k), dtype=torch.uint8)
            mult = torch.randint(1, 16, (n, k // int4_math.GROUP), dtype=torch.uint8)
            layers.append(
                int4_math.Int4Weight(
                    int4_math.pack_codes(codes), mult, torch.rand(n) * 1e-3, torch.zeros(n, dtype=torch.int32)
                )
            )
    return layers


def _fbgemm_layers(torch):
    from slimvl.quant.kernels import KERNELS

    prepare = KERNELS["fbgemm_dynamic"].prepare
    return [
        prepare(torch.randint(-127, 128, (n, k), dtype=torch.int8), torch.rand(n) * 1e-3)
        for _ in range(LAYERS)
        for n, k in SHAPES
    ]


def _aten_int4_layers(torch, group: int = 32):
    layers = []
    for _ in range(LAYERS):
        for n, k in SHAPES:
            packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(
                torch.randint(0, 16, (n, k), dtype=torch.int32), 1
            )
            scales_zeros = torch.rand(k // group, n, 2, dtype=torch.bfloat16)
            layers.append((packed, scales_zeros))
    return layers


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prefill-rows", type=int, default=256)
    parser.add_argument("--aten", action="store_true", help="also time ATen's int4 (bf16 activations)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    import torch

    from slimvl.atomic import write_text_atomic
    from slimvl.precision import int4_kernel, int4_math

    torch.set_num_threads(args.threads)
    ext = int4_kernel.extension()
    if ext is None:
        print("the int4 extension is not available here", file=sys.stderr)
        return 1
    int4 = _int4_layers(torch, int4_math)
    fbgemm = _fbgemm_layers(torch)
    aten = _aten_int4_layers(torch) if args.aten else None

    kernels = {
        "int4_avx2": lambda i, x: ext.linear(
            x, int4[i].codes, int4[i].mult, int4[i].offsets, int4[i].row_scale, None
        ),
        "fbgemm_int8": lambda i, x: torch.ops.quantized.linear_dynamic(x, fbgemm[i], True),
    }
    if aten is not None:
        kernels["aten_int4_bf16"] = lambda i, x: torch.ops.aten._weight_int4pack_mm_for_cpu(
            x.to(torch.bfloat16), aten[i][0], 32, aten[i][1]
        )
    from slimvl.precision.int4_modules import EXPANDED_CHUNK_ROWS

    expanded = {  # what an int4 layer runs at 16 rows or more where the race picks `int_mm`
        "int4_int_mm": lambda i, x: ext.linear_expanded(
            x, int4[i].codes, int4[i].mult, int4[i].offsets, int4[i].row_scale, None, EXPANDED_CHUNK_ROWS
        )
    }
    report = {"threads": args.threads, "rounds": args.rounds, "shapes": SHAPES, "layers": LAYERS}
    for label, rows in (("decode", 1), ("prefill", args.prefill_rows)):
        names = list(kernels) + (list(expanded) if rows > 1 else [])
        kernels_here = {**kernels, **expanded}
        inputs = {k: torch.randn(rows, k) for _, k in SHAPES}

        def one_pass(run, inputs=inputs):
            start = time.perf_counter()
            for i in range(LAYERS * len(SHAPES)):
                run(i, inputs[SHAPES[i % len(SHAPES)][1]])
            return (time.perf_counter() - start) * 1e3

        for name in names:  # warm-up
            one_pass(kernels_here[name])
        times = {name: [] for name in names}
        for r in range(args.rounds):
            for name in names if r % 2 == 0 else reversed(names):
                times[name].append(one_pass(kernels_here[name]))
        section = {
            name: {
                "median_ms": statistics.median(t),
                "min_ms": min(t),
                "max_ms": max(t),
                "ms": t,
            }
            for name, t in times.items()
        }
        for name in (n for n in names if n != "fbgemm_int8"):
            section[f"{name}_over_fbgemm"] = statistics.median(
                t / b for t, b in zip(times[name], times["fbgemm_int8"], strict=True)
            )
        report[label] = section
        medians = {n: round(section[n]["median_ms"], 1) for n in names}
        ratios = {k: round(v, 3) for k, v in section.items() if k.endswith("_over_fbgemm")}
        print(label, medians, ratios, flush=True)
    write_text_atomic(args.out, json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
