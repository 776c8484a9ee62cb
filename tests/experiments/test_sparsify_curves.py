from pathlib import Path

import pytest

from slimvl.config import SparsificationConfig
from slimvl.experiments.sparsify_curves import CurveMethod, default_methods, sparsify_curves, write_curves


def test_curves_cover_every_method_and_budget(small_checkpoint: Path, tmp_path: Path) -> None:
    methods = [m for m in default_methods() if m.name in ("text_guided", "lowres")]
    record = sparsify_curves(str(small_checkpoint), [4, 16], n=3, split="val", methods=methods, threads=1)
    assert record["visual_tokens"] == 196  # 448 x 448 at the small checkpoint's processor
    got = {(p["method"], p["kept_target"]): p for p in record["points"]}
    assert set(got) == {("text_guided", 4), ("text_guided", 16), ("lowres", 4), ("lowres", 16)}
    assert got["text_guided", 4]["kept_tokens"] == 4
    assert got["lowres", 16]["kept_tokens"] == 16  # 4 x 4 tokens of 32 px
    for point in got.values():
        assert point["paired_vs_full"]["n"] == 3
    write_curves(record, tmp_path / "c.json", tmp_path / "c.png")
    assert (tmp_path / "c.png").stat().st_size > 1000


def test_curves_reject_a_budget_above_the_image(small_checkpoint: Path) -> None:
    method = CurveMethod("random", SparsificationConfig(sparsity_method="random", min_tokens_per_image=1))
    with pytest.raises(ValueError, match="kept_tokens"):
        sparsify_curves(str(small_checkpoint), [500], n=1, split="val", methods=[method], threads=1)
