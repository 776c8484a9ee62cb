"""Accuracy against weight bytes on builtin:tiny for precision plans: the sensitivity plan at several
byte budgets against uniform formats and llama.cpp's Q4_K_M heuristic, each paired against the float
model on the same questions (accuracy difference with its 95% interval, first-token agreement, mean
KL). Writes JSON and a plot.

    .venv/bin/python benchmarks/precision_pareto.py --n 1000 --out benchmarks/results/precision_pareto_tiny.json

The budgets are average bits per weight of the planned units (`AdaptivePrecisionConfig.target_bits`);
the sensitivity plans optimise bytes only (a negligible `sensitivity_budget`, so they never shrink
below their budget).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

PLANS = [
    {"plan": "uniform", "min_precision": "int4", "max_precision": "int8", "base_precision": "int8"},
    {"plan": "llama_cpp", "min_precision": "int4", "max_precision": "int8", "base_precision": "int8"},
    {"plan": "uniform", "min_precision": "int8", "max_precision": "int8", "base_precision": "int8"},
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument(
        "--budgets", default="4.6,4.9,5.3,6.0", help="bits per weight of the sensitivity plans"
    )
    parser.add_argument("--calibration-samples", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    import torch

    import slimvl
    from slimvl.atomic import write_text_atomic
    from slimvl.config import AdaptivePrecisionConfig, Recipe
    from slimvl.data import examples
    from slimvl.eval import evaluate, next_token_agreement, paired_difference

    torch.set_num_threads(args.threads)
    questions = list(examples("test", args.n))
    float_model = slimvl.load("builtin:tiny")
    base = evaluate(float_model, keep_logprobs=True, questions=questions)
    record = {
        "model": "builtin:tiny",
        "n": args.n,
        "baseline_accuracy": base.accuracy,
        "baseline_weight_bytes": float_model.pipeline.weight_bytes,
        "rows": [],
    }
    del float_model
    chosen = [*PLANS]
    for bits in (float(b) for b in args.budgets.split(",") if b):
        chosen.append(
            {
                "plan": "sensitivity",
                "min_precision": "int4",
                "max_precision": "int8",
                "base_precision": "int8",
                "target_bits": bits,
                "sensitivity_budget": 1e-12,
            }
        )
    for fields in chosen:
        config = AdaptivePrecisionConfig(
            enable_dynamic_precision=False, calibration_samples=args.calibration_samples, **fields
        )
        started = time.perf_counter()
        slim = slimvl.load("builtin:tiny", Recipe(name="precision", adaptive_precision=config))
        plan_s = time.perf_counter() - started
        plan = slim.plans["adaptive_precision"]
        units = plan["units"]
        params = sum(u["params"] for u in units.values())
        result = evaluate(slim, keep_logprobs=True, questions=questions)
        formats = plan["formats"]
        row = {
            **fields,
            "planned_bytes": plan["planned_bytes"],
            "planned_bits_per_weight": 8 * plan["planned_bytes"] / params,
            "weight_bytes": slim.pipeline.weight_bytes,
            "formats": {f: sum(1 for v in formats.values() if v == f) for f in set(formats.values())},
            "accuracy": result.accuracy,
            "paired_difference": paired_difference(base, result),
            "next_token": next_token_agreement(base, result),
            "plan_seconds": round(plan_s, 1),
        }
        record["rows"].append(row)
        delta, agree = row["paired_difference"], row["next_token"]
        print(
            f"{fields['plan']:11s} {fields.get('target_bits', '-')!s:5s} {row['planned_bits_per_weight']:.2f} b/w "
            f"{row['weight_bytes']:>9d} B: {result.accuracy:.3f} ({100 * delta['delta']:+.1f}, "
            f"{100 * delta['ci95'][0]:+.1f}..{100 * delta['ci95'][1]:+.1f}) {agree}",
            flush=True,
        )
        del slim
    write_text_atomic(args.out, json.dumps(record, indent=1) + "\n")
    _plot(record, args.out.with_suffix(".png"))
    return 0


def _plot(record: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (acc, kl) = plt.subplots(1, 2, figsize=(11, 4))
    for plan, marker in (("sensitivity", "o-"), ("uniform", "s"), ("llama_cpp", "^")):
        rows = sorted((r for r in record["rows"] if r["plan"] == plan), key=lambda r: r["weight_bytes"])
        if not rows:
            continue
        x = [r["weight_bytes"] / 1e6 for r in rows]
        acc.plot(x, [100 * r["accuracy"] for r in rows], marker, label=plan)
        kl.plot(x, [r["next_token"]["mean_kl"] for r in rows], marker, label=plan)
    acc.axhline(100 * record["baseline_accuracy"], color="gray", lw=0.8, label="float (fp32)")
    acc.set(xlabel="weight bytes (MB)", ylabel="accuracy %", title=f"builtin:tiny, n={record['n']}")
    kl.set(xlabel="weight bytes (MB)", ylabel="mean KL vs fp32 (nats)", title="first-token divergence")
    acc.legend()
    kl.legend()
    fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, path)


if __name__ == "__main__":
    sys.exit(main())
