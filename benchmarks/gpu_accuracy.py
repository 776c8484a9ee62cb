"""builtin:tiny's accuracy on a CUDA GPU against the same model on the CPU, question by question.

    python benchmarks/gpu_accuracy.py --n 1000 --out benchmarks/results/gpu_NAME/tiny_accuracy_cuda.json

Rows: no optimization and int8 (the device's own rules, then sm_61's forced), each on cuda with every
layer placed, paired against the CPU on the same questions. Writes the JSON atomically.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    import torch

    import slimvl
    from slimvl.atomic import write_text_atomic
    from slimvl.data import examples
    from slimvl.eval import evaluate, next_token_agreement, paired_difference

    if not torch.cuda.is_available():
        raise SystemExit("gpu_accuracy: no CUDA device visible to this PyTorch")
    questions = list(examples("test", args.n))
    record = {"model": "builtin:tiny", "n": args.n, "gpu": torch.cuda.get_device_name(0), "rows": []}
    for recipe in ("none", "int8"):
        cpu = evaluate(slimvl.load("builtin:tiny", recipe), keep_logprobs=True, questions=questions)
        for rules in (None, (6, 1)):
            slim = slimvl.load("builtin:tiny", recipe, device="cuda", gpu_rules=rules)
            cuda = evaluate(slim, keep_logprobs=True, questions=questions)
            row = {
                "recipe": recipe,
                "rules": slim.device.rules.describe(),
                "placement": slim.device.placement.describe(),
                "cpu_accuracy": cpu.accuracy,
                "cuda_accuracy": cuda.accuracy,
                "paired_difference": paired_difference(cpu, cuda),
                "next_token": next_token_agreement(cpu, cuda),
            }
            record["rows"].append(row)
            d = row["paired_difference"]
            print(
                f"{recipe:5s} {row['rules'][:6]}: cpu {cpu.accuracy:.3f} cuda {cuda.accuracy:.3f} "
                f"({100 * d['delta']:+.1f}, {100 * d['ci95'][0]:+.1f}..{100 * d['ci95'][1]:+.1f})",
                flush=True,
            )
    write_text_atomic(args.out, json.dumps(record, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
