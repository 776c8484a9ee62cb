"""Put measured tables into README.md between their markers (never typed by hand).

python scripts/readme_table.py bench benchmarks/results/bench_2b_peers.md     # a `slimvl bench --md-out` report
python scripts/readme_table.py accuracy benchmarks/results/tiny              # `benchmarks/tiny_accuracy.sh` output
python scripts/readme_table.py accuracy-check benchmarks/results/tiny_n2000  # its rows on more questions
python scripts/readme_table.py scorers benchmarks/results/bench_2b_sparsify_scorers.md   # a second bench report
"""

import json
import sys
from pathlib import Path

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
    "sparsify_seed": "sparsification, seed setting (60%; preset sparsify: attention scorer)",
    "sparsify_distilled": "sparsification, seed setting, distilled pre-decoder scorer",
    "sparsify_vision": "sparsification, seed setting, scored and pruned inside the vision encoder",
}


def _replace_block(readme: str, name: str, source: str, body: str) -> None:
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = Path(readme).read_text()
    if start not in text or end not in text:
        raise SystemExit(f"{readme} has no {start} ... {end} block")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    note = f"Generated from `{source}` by `scripts/readme_table.py`."
    Path(readme).write_text(f"{head}{start}\n{note}\n\n{body.strip()}\n{end}{tail}")


def bench_block(report: str) -> str:
    """The report without its title; its sections become headings under the README's own subsection."""
    lines = Path(report).read_text().strip().splitlines()
    kept = [line for line in lines if not line.startswith("# ")]
    return "\n".join("##" + line if line.startswith("## ") else line for line in kept)


def _pct(value: float) -> str:
    return f"{100 * value:.1f}"


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


BLOCKS = {  # README block name -> what renders it from its source
    "bench": bench_block,
    "accuracy": accuracy_block,
    "accuracy-check": accuracy_block,
    "scorers": bench_block,
}


def main(kind: str, source: str, readme: str = "README.md") -> None:
    if kind not in BLOCKS:
        raise SystemExit(f"kind: got {kind!r}, allowed: {', '.join(BLOCKS)}")
    _replace_block(readme, kind, source, BLOCKS[kind](source))


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        raise SystemExit(f"usage: python scripts/readme_table.py {'|'.join(BLOCKS)} SOURCE [README]")
    main(*sys.argv[1:])
