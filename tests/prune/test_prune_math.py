"""The pruning math alone: row masks, the two activation statistics, SparseGPT."""

from __future__ import annotations

import pytest
import torch

from slimvl.prune.criteria import InputHessian, InputNorms, magnitude_scores, wanda_scores
from slimvl.prune.masks import pruned_per_row, row_mask
from slimvl.prune.sparsegpt import sparsegpt_prune


def _data(n: int = 24, k: int = 40, tokens: int = 300, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    scale = torch.rand(k, generator=g) * 4 + 0.1  # uneven input channels: what Wanda exploits
    return torch.randn(n, k, generator=g), torch.randn(tokens, k, generator=g) * scale


@pytest.mark.parametrize("ratio", [0.0, 0.3, 0.5, 0.9])
def test_each_row_loses_exactly_its_share(ratio: float) -> None:
    weight, _ = _data()
    mask = row_mask(magnitude_scores(weight), ratio)
    assert (mask.sum(dim=1) == pruned_per_row(40, ratio)).all()
    assert pruned_per_row(40, 0.3) == 12


def test_the_lowest_scores_of_each_row_go() -> None:
    scores = torch.tensor([[4.0, 1.0, 3.0, 2.0], [0.5, 9.0, 0.1, 7.0]])
    assert row_mask(scores, 0.5).tolist() == [[False, True, False, True], [True, False, True, False]]


def test_masks_only_grow_across_steps() -> None:
    weight, _ = _data()
    first = row_mask(torch.rand(24, 40), 0.2)
    second = row_mask(magnitude_scores(weight), 0.4, already=first)
    assert (second[first]).all() and (second.sum(dim=1) == 16).all()


def test_wanda_weighs_each_weight_by_its_inputs_norm() -> None:
    weight, x = _data()
    norms = InputNorms(40)
    norms.add(x[:100])
    norms.add(x[100:].reshape(2, 100, 40))
    torch.testing.assert_close(norms.sq_norms, x.double().square().sum(0))
    assert norms.tokens == 300
    expected = weight.abs() * x.norm(dim=0)
    torch.testing.assert_close(wanda_scores(weight, norms.sq_norms), expected)


def test_the_hessian_is_twice_the_mean_outer_product() -> None:
    _, x = _data()
    hessian = InputHessian(40)
    for chunk in x.split(70):
        hessian.add(chunk)
    torch.testing.assert_close(hessian.hessian, 2 * x.double().T @ x.double() / 300)


def _reconstruction_error(weight: torch.Tensor, pruned: torch.Tensor, x: torch.Tensor) -> float:
    return float((x @ weight.T - x @ pruned.T).square().sum())


@pytest.mark.parametrize("block_size", [128, 16, 7])
def test_sparsegpt_prunes_exactly_and_its_updates_compensate(block_size: int) -> None:
    weight, x = _data()
    hessian = InputHessian(40)
    hessian.add(x)
    pruned, mask = sparsegpt_prune(weight, hessian.hessian, 0.5, block_size=block_size)
    assert (mask.sum(dim=1) == 20).all() and (pruned[mask] == 0).all() and (pruned[~mask] != 0).all()
    # the same mask with the other weights left as they were reconstructs the outputs worse
    assert _reconstruction_error(weight, pruned, x) < 0.97 * _reconstruction_error(
        weight, weight.masked_fill(mask, 0), x
    )


def test_sparsegpt_reconstructs_better_than_wanda_and_magnitude() -> None:
    weight, x = _data()
    hessian, norms = InputHessian(40), InputNorms(40)
    hessian.add(x)
    norms.add(x)
    pruned, _ = sparsegpt_prune(weight, hessian.hessian, 0.5)
    errors = {
        "wanda": _reconstruction_error(
            weight, weight.masked_fill(row_mask(wanda_scores(weight, norms.sq_norms), 0.5), 0), x
        ),
        "magnitude": _reconstruction_error(
            weight, weight.masked_fill(row_mask(magnitude_scores(weight), 0.5), 0), x
        ),
    }
    assert _reconstruction_error(weight, pruned, x) < errors["wanda"] < errors["magnitude"]


def test_sparsegpt_with_an_earlier_mask_keeps_it_and_reaches_the_new_ratio() -> None:
    weight, x = _data()
    hessian = InputHessian(40)
    hessian.add(x)
    _, first = sparsegpt_prune(weight, hessian.hessian, 0.2, block_size=16)
    pruned, second = sparsegpt_prune(
        weight.masked_fill(first, 0), hessian.hessian, 0.45, first, block_size=16
    )
    assert second[first].all() and (second.sum(dim=1) == 18).all() and (pruned[second] == 0).all()


def test_sparsegpt_at_ratio_zero_changes_nothing() -> None:
    weight, x = _data()
    pruned, mask = sparsegpt_prune(weight, 2 * x.T @ x / 300, 0.0)
    assert torch.equal(pruned, weight) and not mask.any()
