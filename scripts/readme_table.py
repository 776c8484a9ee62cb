"""Put measured tables into README.md and docs/*.md between their markers (never typed by hand).

A block is the text between `<!-- NAME:start -->` and `<!-- NAME:end -->`; its first line names the
sources it was generated from, so that it can be generated again from them.

python scripts/readme_table.py                 # every block in README.md and docs/*.md, from the sources it names
python scripts/readme_table.py --check         # the same, but only say which blocks differ (exit 1 if any)
python scripts/readme_table.py headline benchmarks/results/bench_2b_ablation.json  # `slimvl bench --ablation`
python scripts/readme_table.py bench benchmarks/results/bench_2b_peers.md     # a `slimvl bench --md-out` report
python scripts/readme_table.py accuracy benchmarks/results/tiny              # `benchmarks/tiny_accuracy.sh` output
python scripts/readme_table.py accuracy-check benchmarks/results/tiny_n2000  # its rows on more questions
python scripts/readme_table.py scorers benchmarks/results/bench_2b_sparsify_scorers.md   # a second bench report
python scripts/readme_table.py ablation benchmarks/results/bench_2b_ablation.md  # `slimvl bench --ablation`
python scripts/readme_table.py curves benchmarks/results/sparsify_curves_tiny.json  # benchmarks/sparsify_curves.py
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = "src/slimvl/bench/SCHEMA.md"
QUESTION_TYPES = ("color", "shape", "count", "exists", "position", "relation")
# file in the accuracy folder -> what its row is
ACCURACY_ROWS = {
    "eval_test": "builtin:tiny, no optimization",
    "eval_blind": "same questions, blank images (blind check)",
    "int8_dynamic": "int8, dynamic activations (preset int8)",
    "int8_static": "int8, static calibrated activations",
    "int8_static_smoothquant": "int8, static + SmoothQuant (alpha 0.5)",
    "int8_dynamic_full_range": "int8, dynamic, 8-bit activations (VNNI CPUs only)",
    "int8_weight_only": "int8 weights only, activations bf16 or fp32 (activation_bits 16)",
    "sparsify_seed": "60% of image tokens dropped, attention scorer (preset sparsify)",
    "sparsify_distilled": "60% of image tokens dropped, distilled scorer",
    "sparsify_vision": "60% of image tokens dropped, vision scorer",
}


def _documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _pct(value: float) -> str:
    return f"{100 * value:.1f}"


def bench_block(report: str) -> str:
    """A `slimvl bench --md-out` report without its title; its sections become headings one level down."""
    lines = Path(report).read_text().strip().splitlines()
    kept = [line for line in lines if not line.startswith("# ")]
    return "\n".join("##" + line if line.startswith("## ") else line for line in kept)


def accuracy_block(folder: str) -> str:
    header = [
        "row",
        "n",
        "accuracy % (95% CI)",
        *QUESTION_TYPES,
        "Δ vs none, points (95% CI)",
        "top-1 agree %",
        "mean KL",
    ]
    rows = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    majority = None
    for stem, label in ACCURACY_ROWS.items():
        path = Path(folder) / f"{stem}.json"
        if not path.is_file():
            continue
        r = json.loads(path.read_text())
        majority = r.get("majority_baseline", majority)
        by_type = [(_pct(r["by_type"][t]["accuracy"]) if t in r["by_type"] else "-") for t in QUESTION_TYPES]
        diff, agree = r.get("paired_difference"), r.get("next_token")
        cells = [
            label,
            str(r["n"]),
            f"{_pct(r['accuracy'])} ({_pct(r['ci95'][0])}–{_pct(r['ci95'][1])})",
            *by_type,
            f"{100 * diff['delta']:+.1f} ({100 * diff['ci95'][0]:+.1f} to {100 * diff['ci95'][1]:+.1f})"
            if diff
            else "",
            f"{100 * agree['top1_agreement']:.1f}" if agree else "",
            f"{agree['mean_kl']:.1e}" if agree else "",
        ]
        rows.append("| " + " | ".join(cells) + " |")
    if majority is not None:
        rows.append("")
        rows.append(
            f"Majority-answer baseline (per question type, fitted on the train split): {_pct(majority)}%."
        )
    return "\n".join(rows)


# The README's headline: the ablation's one-at-a-time rows and `all`, as the seed's table reads.
HEADLINE_ROWS = {
    "base": "no optimization (fp32)",
    "int8": "int8 alone",
    "sparsify": "60% of image tokens dropped, alone",
    "prune": "30% of MLP channels removed, alone",
    "adaptive": "int4 decoder (adaptive precision), alone",
    "all": "all four: preset `laptop`",
}


def _times(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def headline_block(report: str) -> str:
    """The ablation of a `slimvl bench --ablation` JSON report: each optimization alone and all together,
    against no optimization, beside the seed's estimates."""
    r = json.loads(Path(report).read_text())
    entries = {entry["name"]: entry for entry in r.get("ablation") or []}
    rows_by_name = {row["name"]: row for row in r["rows"]}
    missing = [name for name in HEADLINE_ROWS if name not in entries]
    if missing:
        raise SystemExit(f"{report} has no ablation row {', '.join(missing)}: run slimvl bench --ablation")
    header = [
        "",
        "end to end (seed)",
        "time to first token",
        "decode speed",
        "peak memory (seed)",
        "accuracy on builtin:tiny (seed)",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, label in HEADLINE_ROWS.items():
        entry, row = entries[name], rows_by_name[name]
        if entry["status"] != "ok":
            raise SystemExit(f"{report}: row {name} is {entry['status']}: {entry.get('error')}")
        seed = entry["seed_estimate"] or {}
        delta = entry["accuracy_delta"]
        accuracy = f"{_pct(entry['accuracy'])}%" if name == "base" else f"{100 * delta:+.1f} points"
        cells = [
            label,
            f"{row['e2e_s']:.1f} s" + ("" if name == "base" else f", {_times(entry['speedup_e2e'])} faster"),
            f"{row['ttft_ms'] / 1000:.2f} s",
            f"{row['decode_tok_s']:.1f} tokens/s",
            f"{row['peak_rss_mb'] / 1000:.1f} GB"
            + ("" if name == "base" else f", {100 * entry['memory_reduction']:.0f}% less"),
            accuracy,
        ]
        if seed:
            cells[1] += f" ({seed['speedup']})"
            cells[4] += f" ({seed['memory_reduction']})"
            cells[5] += f" ({seed['accuracy']})"
        lines.append("| " + " | ".join(cells) + " |")
    machine, accuracy_n = r["machine"], r.get("accuracy_n")
    peers = [row for row in r["rows"] if row["kind"] == "openvino" and row["status"] == "ok"]
    peer_text = "".join(
        f" {row['description']}: {row['e2e_s']:.1f} s end to end, {row['decode_tok_s']:.1f} tokens/s, "
        f"{row['peak_rss_mb'] / 1000:.1f} GB."
        for row in peers
    )
    lines += [
        "",
        f"Speed and memory: `{r['model']}` (the Qwen3-VL-2B architecture with random weights), one "
        f"{r['scenario']['image_size'][0]}×{r['scenario']['image_size'][1]} image, "
        f"{r['scenario']['max_new_tokens']} new tokens, {r['threads']} threads on a "
        f"{machine['physical_cores']}-core {machine['cpu_model']}, median of {r['runs']} runs; speedups "
        "paired round by round against no optimization where they ran side by side. Accuracy: "
        f"exact-match answers of builtin:tiny{'' if accuracy_n is None else f' on {accuracy_n} test questions'}, "
        "change against no optimization on the same questions. In brackets: the estimates slimvl was "
        f"specified with.{peer_text}",
    ]
    return "\n".join(lines)


CURVE_METHODS = {  # method in a sparsify_curves record -> what its row is
    "attention": "attention scorer (preset sparsify)",
    "distilled": "distilled scorer",
    "vision": "vision scorer",
    "text_guided": "embedding similarity (text_guided)",
    "random": "random tokens",
    "grid": "uniform grid",
    "lowres": "smaller image instead (tokens it gives)",
}


def curves_block(record: str) -> str:
    """Accuracy against image tokens kept, one row per method, from `benchmarks/sparsify_curves.py`."""
    r = json.loads(Path(record).read_text())
    kept = sorted({p["kept_target"] for p in r["points"]})
    by_method: dict[str, dict[int, dict]] = {}
    for p in r["points"]:
        by_method.setdefault(p["method"], {})[p["kept_target"]] = p
    header = ["tokens kept of " + str(r["visual_tokens"]), *(str(k) for k in kept)]
    rows = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    known = [m for m in CURVE_METHODS if m in by_method]
    for method in known + [m for m in by_method if m not in CURVE_METHODS]:
        points = by_method[method]
        cells = []
        for k in kept:
            p = points.get(k)
            if p is None:
                cells.append("-")
            elif p["kept_tokens"] != k:
                cells.append(f"{_pct(p['accuracy'])} ({p['kept_tokens']})")
            else:
                cells.append(_pct(p["accuracy"]))
        rows.append("| " + " | ".join([CURVE_METHODS.get(method, method), *cells]) + " |")
    rows += [
        "",
        f"Exact-match accuracy % of `{r['model']}` on the first {r['n']} {r['split']} questions; "
        f"with every token: {_pct(r['full']['accuracy'])}%. A smaller image gives a few tokens fewer "
        "than the target (in brackets).",
    ]
    return "\n".join(rows)


# block name -> (what renders it from its sources, the sources it is generated from by default)
BLOCKS: dict[str, tuple[Callable[..., str], tuple[str, ...]]] = {
    "headline": (headline_block, ("benchmarks/results/bench_2b_ablation.json",)),
    "bench": (bench_block, ("benchmarks/results/bench_2b_peers.md",)),
    "accuracy": (accuracy_block, ("benchmarks/results/tiny",)),
    "accuracy-check": (accuracy_block, ("benchmarks/results/tiny_n2000",)),
    "scorers": (bench_block, ("benchmarks/results/bench_2b_sparsify_scorers.md",)),
    "ablation": (bench_block, ("benchmarks/results/bench_2b_ablation.md",)),
    "curves": (curves_block, ("benchmarks/results/sparsify_curves_tiny.json",)),
}
_BLOCK = re.compile(r"<!-- (?P<name>[\w-]+):start -->\n(?P<body>.*?)<!-- (?P=name):end -->", re.S)
_NOTE = re.compile(r"Generated from (.*?) by `scripts/readme_table.py`\.")


def _note(sources: tuple[str, ...]) -> str:
    return f"Generated from {' and '.join(f'`{s}`' for s in sources)} by `scripts/readme_table.py`."


def _sources_named(body: str) -> tuple[str, ...] | None:
    match = _NOTE.search(body.split("\n", 1)[0])
    return tuple(re.findall(r"`([^`]+)`", match.group(1))) if match else None


def render(name: str, sources: tuple[str, ...], document: Path) -> str:
    """The whole body of block `name` in `document`: the note naming its sources, then the rendered text."""
    if name not in BLOCKS:
        raise SystemExit(f"block: got {name!r}, allowed: {', '.join(BLOCKS)}")
    render_fn, _ = BLOCKS[name]
    cwd = Path.cwd()
    try:
        os.chdir(ROOT)  # sources are paths from the repository root
        body = render_fn(*sources).strip()
    finally:
        os.chdir(cwd)
    schema = os.path.relpath(ROOT / SCHEMA, document.parent)
    body = body.replace("see SCHEMA.md", f"see [SCHEMA.md]({schema})")
    return f"{_note(sources)}\n\n{body}\n"


def regenerate(text: str, document: Path, only: str | None = None, sources: tuple[str, ...] = ()) -> str:
    """`text` with its blocks generated again: every block from the sources its note names (or the
    block's default sources), or only block `only` from `sources`."""

    def replace(match: re.Match[str]) -> str:
        name = match["name"]
        if only is not None and name != only:
            return match[0]
        if only is not None and sources:
            used = sources
        else:
            used = _sources_named(match["body"]) or BLOCKS.get(name, (None, ()))[1]
        return f"<!-- {name}:start -->\n{render(name, used, document)}<!-- {name}:end -->"

    return _BLOCK.sub(replace, text)


def blocks_in(text: str) -> list[str]:
    return [m["name"] for m in _BLOCK.finditer(text)]


def main(argv: list[str]) -> int:
    check = "--check" in argv
    args = [a for a in argv if a != "--check"]
    only, sources = (args[0], tuple(args[1:])) if args else (None, ())
    if only is not None and only not in BLOCKS:
        raise SystemExit(f"usage: python scripts/readme_table.py [--check] [{'|'.join(BLOCKS)} [SOURCE...]]")
    found, stale = False, []
    for document in _documents():
        text = document.read_text()
        if only is not None and only not in blocks_in(text):
            continue
        found = True
        new = regenerate(text, document, only, sources)
        if new != text:
            stale.append(document.relative_to(ROOT))
            if not check:
                document.write_text(new)
    if only is not None and not found:
        raise SystemExit(f"no document has a <!-- {only}:start --> ... <!-- {only}:end --> block")
    if check and stale:
        print("not as generated (run python scripts/readme_table.py): " + ", ".join(map(str, stale)))
        return 1
    for path in stale:
        print(f"regenerated {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
