"""Accuracy against visual tokens kept, for each way of keeping fewer: one curve per method.

Every point answers the same questions (the first N of a split) as the unsparsified model, so each point
carries its paired difference against it. The methods are the sparsifier's (text-guided, attention,
distilled and vision top-k, random, spatial grid) and the user's obvious alternative: a lower image
resolution that yields the same number of tokens.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from slimvl.api import SlimModel, load
from slimvl.atomic import write_text_atomic
from slimvl.config import Recipe, SparsificationConfig
from slimvl.data import VQAExample, examples
from slimvl.eval import EvalResult, evaluate, paired_difference
from slimvl.sparsify import visual_tokens_for_size

TOKEN_PIXELS = 32 * 32  # one visual token per 32 x 32 pixels (patch 16, spatial merge 2)


@dataclass(frozen=True)
class CurveMethod:
    """A named way to keep `k` visual tokens: a sparsifier config, or (config None) a lower resolution."""

    name: str
    config: SparsificationConfig | None


def default_methods(score_layer: int = 1) -> list[CurveMethod]:
    base = SparsificationConfig(min_tokens_per_image=1, max_tokens_per_image=1 << 20)
    return [
        CurveMethod("text_guided", replace(base, scorer="text_guided")),
        CurveMethod("attention", replace(base, scorer="attention", score_layer=score_layer)),
        CurveMethod("distilled", replace(base, scorer="distilled", score_layer=score_layer)),
        CurveMethod("vision", replace(base, scorer="vision", score_layer=score_layer)),
        CurveMethod("random", replace(base, sparsity_method="random")),
        CurveMethod("grid", replace(base, sparsity_method="grid")),
        CurveMethod("lowres", None),
    ]


def _ratio_for(kept: int, n_visual: int) -> float:
    """The sparsity ratio whose `round((1 - ratio) * n_visual)` is `kept`."""
    return 1 - kept / n_visual


def _lowres_model(slim: SlimModel, kept: int) -> SlimModel:
    """`slim` whose image processor resizes every image to about `kept` tokens' worth of pixels."""
    processor = slim.loaded.preprocessor.image_processor
    processor.size = {"shortest_edge": kept * TOKEN_PIXELS, "longest_edge": kept * TOKEN_PIXELS}
    return slim


def _point(method: str, kept: int, actual: int, result: EvalResult, full: EvalResult) -> dict:
    return {
        "method": method,
        "kept_target": kept,
        "kept_tokens": actual,
        "accuracy": result.accuracy,
        "ci95": list(result.ci95),
        "by_type": {qtype: row["accuracy"] for qtype, row in result.by_type().items()},
        "paired_vs_full": paired_difference(full, result),
    }


def sparsify_curves(
    model_ref: str,
    kept_tokens: Sequence[int],
    n: int = 1000,
    split: str = "test",
    methods: Sequence[CurveMethod] | None = None,
    threads: int | None = None,
) -> dict:
    """Accuracy of every method at every budget of `kept_tokens` (per image), and of the full model."""
    methods = list(methods) if methods is not None else default_methods()
    questions: list[VQAExample] = list(examples(split, n))
    full_model = load(model_ref, threads=threads)
    processor = full_model.loaded.preprocessor.image_processor
    n_visual = visual_tokens_for_size(*questions[0].image.size, processor)
    full = evaluate(full_model, questions=questions, split=split)
    points = []
    for method in methods:
        for kept in kept_tokens:
            if not 1 <= kept <= n_visual:
                raise ValueError(f"kept_tokens: got {kept}, allowed: 1..{n_visual} (the full image's tokens)")
            if method.config is None:
                slim = _lowres_model(load(model_ref, threads=threads), kept)
                actual = visual_tokens_for_size(
                    *questions[0].image.size, slim.loaded.preprocessor.image_processor
                )
            else:
                config = replace(method.config, sparsity_ratio=_ratio_for(kept, n_visual))
                slim = load(model_ref, Recipe(name=method.name, sparsification=config), threads=threads)
                actual = config.tokens_to_keep(n_visual)
            points.append(
                _point(method.name, kept, actual, evaluate(slim, questions=questions, split=split), full)
            )
    return {
        "model": model_ref,
        "split": split,
        "n": len(questions),
        "visual_tokens": n_visual,
        "full": {"accuracy": full.accuracy, "ci95": list(full.ci95)},
        "points": points,
    }


def plot_curves(record: dict, path: str | Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for method in dict.fromkeys(p["method"] for p in record["points"]):
        pts = sorted((p for p in record["points"] if p["method"] == method), key=lambda p: p["kept_tokens"])
        x = [p["kept_tokens"] for p in pts]
        y = [100 * p["accuracy"] for p in pts]
        err = [
            [100 * max(0.0, p["accuracy"] - p["ci95"][0]) for p in pts],
            [100 * max(0.0, p["ci95"][1] - p["accuracy"]) for p in pts],
        ]
        ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=method)
    ax.axhline(100 * record["full"]["accuracy"], color="black", linestyle="--", label="all tokens")
    ax.set_xlabel(f"visual tokens kept (of {record['visual_tokens']})")
    ax.set_ylabel("exact-match accuracy, % (95% CI)")
    ax.set_title(f"{record['model']} · {record['split']} · n={record['n']}")
    ax.legend()
    fig.tight_layout()
    tmp = Path(path).with_name(f".{Path(path).name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)


def write_curves(record: dict, json_path: str | Path, png_path: str | Path) -> None:
    write_text_atomic(json_path, json.dumps(record, indent=2) + "\n")
    plot_curves(record, png_path)
