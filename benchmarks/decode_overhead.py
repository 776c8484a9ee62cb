"""Per-token overhead of slimvl's decode loop outside the matmuls, on builtin:2b-shape.

Times one decode step (embedding, 28 decoder layers, KV cache update, lm_head) of either loop:
`--loop lean` (the pipeline's: `slimvl.models.decode.LeanDecoder` over a `StaticKVCache`) or `--loop hf`
(`slimvl.models.steps.decode_step`: transformers' text model over its `DynamicCache`), and, on the same
weights, the linear layers alone (every decoder projection and lm_head as bare `F.linear` on one token).
The difference is what the loop costs beyond the weight matmuls: attention, norms, rotary, cache, Python
and module dispatch.

    .venv/bin/python benchmarks/decode_overhead.py --dtype bf16 --threads 2 --tokens 32 --loop lean
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from slimvl.atomic import write_text_atomic
from slimvl.models.decode import LeanDecoder, StaticKVCache
from slimvl.models.loader import load_model
from slimvl.models.preprocess import ModelInputs
from slimvl.models.steps import build_sequence, decode_step, prefill
from slimvl.monitor import machine_info


def linears_only_ms(model, dtype: torch.dtype, repeats: int) -> list[float]:
    """Milliseconds of one token through every decoder linear and lm_head, nothing else."""
    weights = [
        m.weight for m in model.model.language_model.layers.modules() if isinstance(m, torch.nn.Linear)
    ] + [model.lm_head.weight]
    inputs = {w.shape[1]: torch.randn(1, w.shape[1], dtype=dtype) for w in weights}
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for w in weights:
            F.linear(inputs[w.shape[1]], w)
        times.append((time.perf_counter() - start) * 1000)
    return times


@torch.inference_mode()
def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="builtin:2b-shape")
    parser.add_argument("--dtype", default="bf16", choices=("fp32", "bf16"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--loop", default="lean", choices=("lean", "hf"))
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    loaded = load_model(args.model, args.dtype)
    model = loaded.model
    ids = loaded.preprocessor.tokenizer("Describe the picture in detail, please.", return_tensors="pt")[
        "input_ids"
    ]
    inputs = ModelInputs(ids, torch.ones_like(ids), torch.zeros_like(ids, dtype=torch.int32), None, None)
    seq = build_sequence(model, inputs, None)
    logits, cache = prefill(model, seq)
    token, position = logits[0, -1].argmax(), seq.next_position
    if args.loop == "lean":
        decoder = LeanDecoder(model)
        cache = StaticKVCache.from_dynamic(cache, capacity=seq.length + args.tokens + 2)
    step_ms = []
    for i in range(args.tokens + 2):
        start = time.perf_counter()
        if args.loop == "lean":
            logits = decoder.step(token, position, cache)
        else:
            logits = decode_step(model, token, position, cache)[:, -1]
        token = logits[0].argmax()
        if i >= 2:  # two warm-up steps
            step_ms.append((time.perf_counter() - start) * 1000)
        position += 1
    linear_ms = linears_only_ms(model, model.dtype, repeats=args.tokens)
    step, linear = statistics.median(step_ms), statistics.median(linear_ms)
    record = {
        "model": args.model,
        "dtype": args.dtype,
        "loop": args.loop,
        "threads": args.threads,
        "tokens": args.tokens,
        "decode_step_ms": {"median": step, "min": min(step_ms), "max": max(step_ms)},
        "linears_only_ms": {"median": linear, "min": min(linear_ms), "max": max(linear_ms)},
        "overhead_ms_per_token": step - linear,
        "overhead_share": (step - linear) / step,
        "machine": machine_info(),
    }
    name = Path(args.model.split(":")[-1]).name
    suffix = "_lean" if args.loop == "lean" else ""
    out = Path(args.out or f"benchmarks/results/decode_overhead_{name}_{args.dtype}{suffix}.json")
    write_text_atomic(out, json.dumps(record, indent=2))
    print(json.dumps({k: v for k, v in record.items() if k != "machine"}, indent=2))


if __name__ == "__main__":
    main()
