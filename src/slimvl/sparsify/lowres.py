"""The baseline a user would try first: lower the image resolution until it yields `budget` tokens.

Qwen3-VL makes one visual token per `factor` x `factor` pixels (patch 16 x spatial merge 2 = 32), so an
image of (c * 32) x (r * 32) pixels gives r * c tokens. The benchmark compares this against keeping
`budget` tokens of the full-resolution image by sparsification.
"""

from __future__ import annotations

import math

from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil, smart_resize

# A grid may miss the budget by up to this fraction when that keeps the aspect ratio closer.
COUNT_TOLERANCE = 0.1


def size_for_tokens(width: int, height: int, budget: int, factor: int = 32) -> tuple[int, int]:
    """(width, height) in multiples of `factor` with about `budget` tokens and the image's aspect ratio.

    Among the grids of rows x cols tokens within `COUNT_TOLERANCE` of the budget, the one with the least
    |log aspect-ratio error| + |relative count error| wins (e.g. 5 x 6 rather than 4 x 8 for 32 tokens
    of a square image).
    """
    if budget < 1 or width < 1 or height < 1:
        raise ValueError(f"size_for_tokens: got {width}x{height} px, budget {budget}; allowed: all >= 1")
    aspect = math.log(width / height)
    best = (abs(math.log(1 / budget) - aspect), budget, 1)  # one column: always exact
    for rows in range(1, budget + 1):
        for cols in {max(1, budget // rows), -(-budget // rows)}:
            miss = abs(rows * cols - budget) / budget
            if miss <= COUNT_TOLERANCE:
                best = min(best, (abs(math.log(cols / rows) - aspect) + miss, rows, cols))
    _, rows, cols = best
    return cols * factor, rows * factor


def visual_tokens_for_size(width: int, height: int, processor: Qwen2VLImageProcessorPil) -> int:
    """Visual tokens `processor` makes of a `width` x `height` image (after its own min/max resizing)."""
    factor = processor.patch_size * processor.merge_size
    h, w = smart_resize(
        height,
        width,
        factor=factor,
        min_pixels=processor.size["shortest_edge"],
        max_pixels=processor.size["longest_edge"],
    )
    return (h // factor) * (w // factor)
