"""A recipe applied at load time against its optimized directory: the same kernels, weight bytes and
greedy tokens? Prints one JSON line.

    .venv/bin/python benchmarks/loadtime_vs_dir.py builtin:2b-shape int8 out/2b-int8
"""

from __future__ import annotations

import argparse
import json
import sys


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("recipe")
    parser.add_argument("directory")
    parser.add_argument("--tokens", type=int, default=32)
    args = parser.parse_args()

    import numpy as np
    import torch
    from PIL import Image

    import slimvl

    torch.set_num_threads(2)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (448, 448, 3), dtype=np.uint8))
    seen = []
    for ref, recipe in ((args.model, args.recipe), (args.directory, None)):
        slim = slimvl.load(ref, recipe)
        answer = slim.generate(
            [image], "Describe the image in detail.", max_new_tokens=args.tokens, ignore_eos=True
        )
        kernels = {n: m["kernel"] for n, m in slim.plans.get("int8", {}).get("modules", {}).items()}
        seen.append(
            {"tokens": answer.token_ids, "weight_bytes": slim.pipeline.weight_bytes, "kernels": kernels}
        )
        del slim, answer
    applied, stored = seen
    same = sum(applied["kernels"].get(k) == v for k, v in stored["kernels"].items())
    print(
        json.dumps(
            {
                "same_tokens": applied["tokens"] == stored["tokens"],
                "weight_bytes": [applied["weight_bytes"], stored["weight_bytes"]],
                "same_kernels": f"{same}/{len(stored['kernels'])}",
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
