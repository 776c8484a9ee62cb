"""Where the prefill time of visual token sparsification goes, both scorers on the same sequences.

In one process, on an optimized directory that holds a fitted distilled scorer (by default the one
`make bench-scorers` writes), each round encodes a fresh image and then runs, in an order that rotates
from round to round: the plain prefill over every token; the attention scorer's split prefill
(`AttentionSparsifier.prefill`: layers before `score_layer` over every token, the question's attention,
the rest over the kept tokens); and the distilled scorer followed by the plain prefill of the kept
tokens (its scorer timed apart: the pipeline runs it in the sparsify stage, before the prefill).
Ratios are taken round by round. A breakdown of the split prefill composes the same functions
it calls (`run_layers`, `question_attention`, selection, `run_layers`) and times each. The floor is the
kept share of the tokens, which is what a prefill linear in its tokens would take.

    .venv/bin/python benchmarks/sparsify_prefill_split.py --rounds 9 --out benchmarks/results/sparsify_prefill_split_2b.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import replace

import torch

import slimvl
from slimvl.atomic import write_text_atomic
from slimvl.bench.scenario import QUESTION
from slimvl.data import make_example
from slimvl.models.decode import StaticKVCache
from slimvl.models.steps import build_sequence, encode_images, prefill
from slimvl.monitor import machine_info
from slimvl.sparsify.prefill import drop_from_cache, question_attention, run_layers
from slimvl.sparsify.scorers import question_mask
from slimvl.sparsify.select import sequence_keep_mask
from slimvl.sparsify.sparsifier import AttentionSparsifier, TokenSparsifier

MODES = ("full", "attention", "distilled")


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000


def split_parts_ms(model, seq, config, special_ids) -> dict[str, float]:
    """The attention scorer's split prefill, step by step, each step timed."""
    text = model.model.language_model
    cache = StaticKVCache.allocate(text.config, seq.length, seq.inputs_embeds.dtype).prefill_cache()
    split = config.score_layer
    start = time.perf_counter()
    hidden = run_layers(model, seq.inputs_embeds, seq, cache, range(0, split))
    parts = {"layers_before_split_all_tokens": _ms(start)}
    start = time.perf_counter()
    scores = question_attention(model, seq, hidden, question_mask(seq, special_ids), split)
    parts["question_attention"] = _ms(start)
    start = time.perf_counter()
    keep = sequence_keep_mask(config, seq, scores)
    kept = seq.keep(keep)
    drop_from_cache(cache, keep, range(0, split))
    parts["select_and_prune"] = _ms(start)
    start = time.perf_counter()
    hidden = run_layers(model, hidden[:, keep], kept, cache, range(split, len(text.layers)))
    model.lm_head(text.norm(hidden[:, -1:]))
    parts["layers_after_split_kept_tokens"] = _ms(start)
    return parts


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


@torch.inference_mode()
def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model", default="out/2b-int8-sparsify-distilled", help="optimized dir, scorer: distilled"
    )
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/results/sparsify_prefill_split_2b.json")
    args = parser.parse_args()
    slim = slimvl.load(args.model, threads=args.threads)
    torch.set_num_threads(args.threads)
    model, distilled = slim.pipeline.model, slim.pipeline.hooks
    if not isinstance(distilled, TokenSparsifier) or distilled.config.scorer != "distilled":
        raise SystemExit(f"{args.model}: its recipe must use `scorer: distilled`")
    attention = AttentionSparsifier(replace(distilled.config, scorer="attention"), distilled.special_ids)
    text_config = model.config.text_config
    times: dict[str, list[float]] = {mode: [] for mode in MODES}
    scorer_ms: list[float] = []
    parts: list[dict[str, float]] = []
    lengths = {}
    for round_ in range(args.rounds + 1):  # round 0 warms up
        inputs = slim.pipeline.preprocessor([make_example(9_000_000 + round_, (448, 448)).image], QUESTION)
        seq = build_sequence(model, inputs, encode_images(model, inputs))
        measured = {}
        for mode in MODES[round_ % 3 :] + MODES[: round_ % 3]:
            cache = StaticKVCache.allocate(text_config, seq.length, seq.inputs_embeds.dtype).prefill_cache()
            start = time.perf_counter()
            if mode == "full":
                prefill(model, seq, cache)
            elif mode == "attention":
                _, _, kept = attention.prefill(model, seq, cache)
                lengths = {"full": seq.length, "kept": kept.length, "visual": int(seq.visual_mask.sum())}
            else:  # the scorer runs in the pipeline's sparsify stage: timed apart, as the bench does
                kept = distilled(seq)
                measured["scorer"] = _ms(start)
                start = time.perf_counter()
                prefill(model, kept, cache)
            measured[mode] = _ms(start)
        round_parts = split_parts_ms(model, seq, attention.config, attention.special_ids)
        if round_:
            for mode in MODES:
                times[mode].append(measured[mode])
            scorer_ms.append(measured["scorer"])
            parts.append(round_parts)
    full = times["full"]
    record = {
        "model": args.model,
        "rounds": args.rounds,
        "threads": args.threads,
        "tokens": lengths,
        "floor_kept_share": lengths["kept"] / lengths["full"],
        "prefill_ms": {mode: summary(values) for mode, values in times.items()},
        "paired_ratio_to_full": {
            mode: summary([a / b for a, b in zip(times[mode], full, strict=True)]) for mode in MODES[1:]
        },
        "distilled_scorer_ms": summary(scorer_ms),
        "attention_split_parts_ms": {key: summary([p[key] for p in parts]) for key in parts[0]},
        "machine": machine_info(),
    }
    write_text_atomic(args.out, json.dumps(record, indent=2))
    print(json.dumps({k: v for k, v in record.items() if k != "machine"}, indent=2))


if __name__ == "__main__":
    main()
