"""Accuracy against visual tokens kept, per method, on builtin:tiny (or any checkpoint): JSON and PNG.

python benchmarks/sparsify_curves.py --n 1000 --out benchmarks/results/sparsify_curves_tiny
"""

from __future__ import annotations

import argparse

import torch

from slimvl.experiments.sparsify_curves import sparsify_curves, write_curves


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="builtin:tiny")
    p.add_argument("--kept", default="6,13,19,26,38,51", help="comma-separated visual tokens to keep")
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--split", default="test")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", required=True, help="path prefix: writes PREFIX.json and PREFIX.png")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    kept = [int(k) for k in args.kept.split(",")]
    record = sparsify_curves(args.model, kept, n=args.n, split=args.split, threads=args.threads)
    record["command"] = "python benchmarks/sparsify_curves.py " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()
    )
    write_curves(record, f"{args.out}.json", f"{args.out}.png")
    for point in record["points"]:
        print(f"{point['method']:12s} kept {point['kept_tokens']:3d}  accuracy {point['accuracy']:.3f}")
    print(f"full ({record['visual_tokens']} tokens): {record['full']['accuracy']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
