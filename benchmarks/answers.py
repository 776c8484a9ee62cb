"""Per-question greedy answers (text and token ids) of one model + recipe on the first N questions of a
split, as JSON: what `slimvl eval` scores, kept whole so that two versions of slimvl can be compared
answer by answer (a refactor must not change one).

    .venv/bin/python benchmarks/answers.py builtin:tiny --recipe int8 --n 1000 --out answers/int8.json
    .venv/bin/python benchmarks/answers.py --compare answers_before/int8.json answers_after/int8.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def dump(model: str, recipe: str | None, split: str, n: int, max_new_tokens: int, out: Path) -> None:
    import torch

    import slimvl
    from slimvl.data import examples

    torch.set_num_threads(2)
    slim = slimvl.load(model, recipe)
    rows = []
    for example in examples(split, n):
        answer = slim.generate([example.image], example.question, max_new_tokens=max_new_tokens)
        rows.append({"text": answer.text, "token_ids": answer.token_ids})
    record = {"model": model, "recipe": recipe, "split": split, "n": n, "answers": rows}
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.parent.mkdir(parents=True, exist_ok=True)
    tmp.write_text(json.dumps(record) + "\n")
    os.replace(tmp, out)


def compare(before: Path, after: Path) -> int:
    a, b = (json.loads(p.read_text())["answers"] for p in (before, after))
    if len(a) != len(b):
        print(f"{before.name}: {len(a)} answers against {len(b)}")
        return 1
    differ = [i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y]
    print(
        f"{before.name}: {len(a) - len(differ)} of {len(a)} answers identical"
        + (f"; first differing question {differ[0]}" if differ else "")
    )
    return 1 if differ else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default="builtin:tiny")
    parser.add_argument("--recipe")
    parser.add_argument("--split", default="test")
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--max-new-tokens", type=int, default=4)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("BEFORE", "AFTER"))
    args = parser.parse_args()
    if args.compare:
        return compare(*args.compare)
    if args.out is None:
        parser.error("--out is required unless --compare")
    dump(args.model, args.recipe, args.split, args.n, args.max_new_tokens, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
