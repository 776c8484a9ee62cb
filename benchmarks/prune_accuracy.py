"""Accuracy of builtin:tiny pruned each way, paired against the unpruned model on the same questions.

    .venv/bin/python benchmarks/prune_accuracy.py --n 1000 --out benchmarks/results/prune_tiny.json

Rows: each criterion x schedule at `--ratio`, before and after recovery (`--fine-tune-steps`); at
`--high-ratio` each criterion, iterative, before and after recovery; structured (Wanda scores, `--structured-schedule`) at each
of `--structured` (MLP channel ratio, head ratio, layers removed), before and after recovery. Writes the JSON (atomically); prints a line per row.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path


def structured_setting(spec: str) -> dict:
    """ "MLP[:HEADS[:LAYERS]]" -> the structured fields: MLP channel ratio, head ratio, layers removed."""
    parts = spec.split(":")
    fields = {"pruning_ratio": float(parts[0])}
    if len(parts) > 1:
        fields["head_ratio"] = float(parts[1])
    if len(parts) > 2:
        fields["layers_removed"] = int(parts[2])
    return fields


def rows(
    ratio: float, high: float, steps: int, structured: list[dict], structured_schedule: str
) -> list[dict]:
    out = []
    for criterion in ("magnitude", "wanda", "sparsegpt"):
        for schedule in ("one_shot", "iterative"):
            for fine_tune in (0, steps):
                out.append(
                    {
                        "pruning_ratio": ratio,
                        "criterion": criterion,
                        "pruning_schedule": schedule,
                        "fine_tune_steps": fine_tune,
                    }
                )
    for criterion in ("magnitude", "wanda", "sparsegpt"):
        for fine_tune in (0, steps):
            out.append(
                {
                    "pruning_ratio": high,
                    "criterion": criterion,
                    "pruning_schedule": "iterative",
                    "fine_tune_steps": fine_tune,
                }
            )
    for setting in structured:
        for fine_tune in (0, steps):
            out.append(
                {
                    **setting,
                    "criterion": "wanda",
                    "pruning_schedule": structured_schedule,
                    "structured": True,
                    "fine_tune_steps": fine_tune,
                }
            )
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--ratio", type=float, default=0.3)
    parser.add_argument("--high-ratio", type=float, default=0.5)
    parser.add_argument("--fine-tune-steps", type=int, default=200)
    parser.add_argument(
        "--structured",
        default="0.3,0.5,0.6",
        help="structured settings, comma-separated, each MLP[:HEADS[:LAYERS]]: MLP channel ratio, "
        "decoder head ratio, decoder layers removed",
    )
    parser.add_argument("--only-structured", action="store_true")
    parser.add_argument("--structured-schedule", choices=("iterative", "one_shot"), default="iterative")
    parser.add_argument("--calibration-samples", type=int, default=64, help="pruning statistics and recovery")
    parser.add_argument("--learning-rate", type=float, default=2e-5, help="recovery's Adam learning rate")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    import torch

    import slimvl
    from slimvl.config import PruningConfig, Recipe
    from slimvl.data import examples
    from slimvl.eval import evaluate, next_token_agreement, paired_difference

    torch.set_num_threads(args.threads)
    questions = list(examples("test", args.n))
    base = evaluate(slimvl.load("builtin:tiny"), keep_logprobs=True, questions=questions)
    record = {"model": "builtin:tiny", "n": args.n, "baseline_accuracy": base.accuracy, "rows": []}
    structured = [structured_setting(spec) for spec in args.structured.split(",") if spec]
    chosen = rows(args.ratio, args.high_ratio, args.fine_tune_steps, structured, args.structured_schedule)
    for fields in chosen:
        fields.update(calibration_samples=args.calibration_samples)
        if fields["fine_tune_steps"]:
            fields.update(fine_tune_learning_rate=args.learning_rate)
    if args.only_structured:
        chosen = [fields for fields in chosen if fields.get("structured")]
    for fields in chosen:
        started = time.perf_counter()
        slim = slimvl.load("builtin:tiny", Recipe(name="prune", pruning=PruningConfig(**fields)))
        prune_s = time.perf_counter() - started
        result = evaluate(slim, keep_logprobs=True, questions=questions)
        row = {
            **fields,
            "accuracy": result.accuracy,
            "paired_difference": paired_difference(base, result),
            "next_token": next_token_agreement(base, result),
            "recovery": slim.plans["pruning"].get("recovery"),
            "prune_seconds": round(prune_s, 1),
        }
        record["rows"].append(row)
        delta = row["paired_difference"]
        print(
            f"{'structured ' if fields.get('structured') else ''}{fields['criterion']:9s} {fields['pruning_schedule']:9s} "
            f"r={fields['pruning_ratio']} heads={fields.get('head_ratio', 0)} layers={fields.get('layers_removed', 0)} "
            f"ft={fields['fine_tune_steps']:3d}: "
            f"{result.accuracy:.3f} ({100 * delta['delta']:+.1f} points, {100 * delta['ci95'][0]:+.1f}..{100 * delta['ci95'][1]:+.1f}) "
            f"{prune_s:.0f}s",
            flush=True,
        )
    tmp = args.out.with_name(f".{args.out.name}.tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    os.replace(tmp, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
