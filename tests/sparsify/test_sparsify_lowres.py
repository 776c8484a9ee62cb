from __future__ import annotations

import math

import pytest

from slimvl.models.checkpoint import qwen3vl_image_processor
from slimvl.sparsify.lowres import size_for_tokens, visual_tokens_for_size


@pytest.mark.parametrize("budget", [16, 32, 48, 64, 78, 96, 128, 196])
@pytest.mark.parametrize(("width", "height"), [(448, 448), (320, 512), (1024, 576), (300, 1000)])
def test_token_count_within_ten_percent_of_budget(width: int, height: int, budget: int) -> None:
    w, h = size_for_tokens(width, height, budget)
    assert w % 32 == 0 and h % 32 == 0
    processor = qwen3vl_image_processor(min_pixels=32 * 32)  # let small budgets through unscaled
    tokens = visual_tokens_for_size(w, h, processor)
    assert tokens == (w // 32) * (h // 32)
    assert abs(tokens - budget) <= 0.1 * budget
    # The aspect ratio is kept within what a grid of about `budget` cells allows.
    assert abs(math.log((w / h) / (width / height))) < 0.45


def test_square_budgets_give_square_grids() -> None:
    assert size_for_tokens(448, 448, 196) == (448, 448)
    assert size_for_tokens(1000, 1000, 64) == (256, 256)


def test_default_processor_floor_is_reported() -> None:
    """Qwen3-VL's min_pixels (64 tokens) scales a smaller image back up: the benchmark must lower it."""
    w, h = size_for_tokens(448, 448, 16)
    assert visual_tokens_for_size(w, h, qwen3vl_image_processor()) == 64


def test_rejects_empty_budget() -> None:
    with pytest.raises(ValueError, match="budget"):
        size_for_tokens(448, 448, 0)
