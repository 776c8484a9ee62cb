from __future__ import annotations

import pytest
import torch

from slimvl.config import SparsificationConfig
from slimvl.sparsify.select import grid_mask, grid_shape, image_coords, random_mask, select_visual, top_k_mask


def _positions(rows: int, cols: int, start: int) -> torch.Tensor:
    """MRoPE (t, h, w) positions (3, rows * cols) of one image placed at `start`, as Qwen3-VL makes them."""
    h, w = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
    return torch.stack([torch.zeros(rows * cols, dtype=torch.long), h.flatten(), w.flatten()]) + start


def test_top_k_keeps_the_highest_in_original_order() -> None:
    scores = torch.tensor([0.1, 0.9, 0.3, 0.8, 0.2, 0.7])
    mask = top_k_mask(scores, 3)
    assert mask.tolist() == [False, True, False, True, False, True]
    assert top_k_mask(scores, 6).all() and top_k_mask(scores, 10).all()


def test_top_k_ties_go_to_earlier_tokens() -> None:
    assert top_k_mask(torch.ones(5), 2).tolist() == [True, True, False, False, False]


def test_random_is_reproducible_by_seed() -> None:
    def draw(seed: int) -> torch.Tensor:
        return random_mask(196, 78, torch.Generator().manual_seed(seed))

    assert int(draw(0).sum()) == 78
    assert torch.equal(draw(0), draw(0))
    assert not torch.equal(draw(0), draw(1))


def test_image_coords_from_positions() -> None:
    coords = image_coords(_positions(16, 10, start=37))
    assert coords[:, 0].max() == 15 and coords[:, 1].max() == 9 and coords.min() == 0
    assert coords[11].tolist() == [1, 1]


@pytest.mark.parametrize(
    ("rows", "cols", "k"), [(14, 14, 78), (16, 10, 64), (16, 10, 32), (7, 3, 20), (14, 14, 1)]
)
def test_grid_keeps_exactly_k_spread_over_the_image(rows: int, cols: int, k: int) -> None:
    coords = image_coords(_positions(rows, cols, start=5))
    mask = grid_mask(coords, k)
    assert int(mask.sum()) == k
    kept = coords[mask]
    if k >= 4:
        # Every quarter of the image gets a fair share of the kept tokens.
        top, left = kept[:, 0] < rows / 2, kept[:, 1] < cols / 2
        quarters = [int((a & b).sum()) for a in (top, ~top) for b in (left, ~left)]
        assert min(quarters) >= k / 4 * 0.5, quarters
        assert kept[:, 0].max() - kept[:, 0].min() >= rows * 0.6
        assert kept[:, 1].max() - kept[:, 1].min() >= cols * 0.6


def test_grid_points_are_evenly_strided() -> None:
    coords = image_coords(_positions(14, 14, start=0))
    r, c = grid_shape(14, 14, 49)
    assert (r, c) == (7, 7)
    kept = coords[grid_mask(coords, 49)]
    assert sorted(set(kept[:, 0].tolist())) == [1, 3, 5, 7, 9, 11, 13]
    assert sorted(set(kept[:, 1].tolist())) == [1, 3, 5, 7, 9, 11, 13]


@pytest.mark.parametrize("method", ["top_k", "random", "grid"])
def test_select_visual_counts_per_image(method: str) -> None:
    config = SparsificationConfig(sparsity_ratio=0.6, sparsity_method=method)
    sizes = [(16, 10), (14, 14), (4, 4)]  # 160, 196 and 16 tokens
    positions = torch.cat([_positions(r, c, start=100 * i) for i, (r, c) in enumerate(sizes)], dim=1)
    per_image = [r * c for r, c in sizes]
    scores = torch.randn(sum(per_image), generator=torch.Generator().manual_seed(0))
    mask = select_visual(config, per_image, positions, scores)
    counts = [int(part.sum()) for part in mask.split(per_image)]
    assert counts == [config.tokens_to_keep(n) for n in per_image] == [64, 78, 16]
    assert torch.equal(mask, select_visual(config, per_image, positions, scores))


def test_select_visual_top_k_is_per_image() -> None:
    """The best tokens of one image cannot crowd out another image."""
    config = SparsificationConfig(sparsity_ratio=0.5, min_tokens_per_image=1)
    positions = torch.cat([_positions(2, 2, start=0), _positions(2, 2, start=10)], dim=1)
    scores = torch.tensor([9.0, 8.0, 7.0, 6.0, 0.1, 0.4, 0.3, 0.2])
    mask = select_visual(config, [4, 4], positions, scores)
    assert mask.tolist() == [True, True, False, False, False, True, True, False]


def test_top_k_needs_scores() -> None:
    with pytest.raises(ValueError, match="needs scores"):
        select_visual(SparsificationConfig(), [4], _positions(2, 2, start=0))
