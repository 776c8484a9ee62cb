from __future__ import annotations

from typing import Any

from slimvl.bench.printers import printed_pairs


def _pair(row: str, baseline: str) -> dict[str, Any]:
    return {"row": row, "baseline": baseline}


def test_printed_pairs_are_against_the_first_row_of_each_wave() -> None:
    # Wave 1: a, b, c; wave 2: d, e; f ran alone.
    waves = [["a", "b", "c"], ["d", "e"]]
    paired = [_pair(r, b) for wave in waves for r in wave for b in wave if r != b]
    report = {"rows": [{"name": n} for n in "abcdef"], "paired": paired}
    assert [(p["row"], p["baseline"]) for p in printed_pairs(report)] == [
        ("b", "a"),
        ("c", "a"),
        ("e", "d"),
    ]


def test_a_report_without_pairs_prints_none() -> None:
    assert printed_pairs({"rows": [{"name": "a"}]}) == []
