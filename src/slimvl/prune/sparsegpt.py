"""SparseGPT (Frantar & Alistarh, 2023): prune a linear's weights column block by column block, updating
the weights not yet visited to compensate each pruned one (optimal brain surgeon on the layer-wise
reconstruction loss ||W X - Ŵ X||², whose Hessian is H = 2 X Xᵀ).

Within each block of `block_size` input columns, each row prunes its weights with the lowest
w² / [H⁻¹]_jj² (the OBS saliency), as many as bring that row's count to round(ratio * columns so far):
every row ends with exactly `pruned_per_row(K, ratio)` pruned weights.
"""

from __future__ import annotations

import torch

from slimvl.prune.masks import pruned_per_row

BLOCK_SIZE = 128
DAMPENING = 0.01  # of the mean diagonal of H, added to it: H is often singular (dead inputs, few tokens)


def _inverse_hessian_factor(hessian: torch.Tensor, dampening: float) -> torch.Tensor:
    """The upper Cholesky factor of H⁻¹ (dead inputs given a unit diagonal, then dampened)."""
    h = hessian.double().clone()
    dead = torch.diag(h) == 0
    h[dead, dead] = 1.0
    h += dampening * torch.mean(torch.diag(h)) * torch.eye(h.shape[0], dtype=h.dtype)
    inverse = torch.cholesky_inverse(torch.linalg.cholesky(h))
    return torch.linalg.cholesky(inverse, upper=True)


def sparsegpt_prune(
    weight: torch.Tensor,
    hessian: torch.Tensor,
    ratio: float,
    already: torch.Tensor | None = None,
    block_size: int = BLOCK_SIZE,
    dampening: float = DAMPENING,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(pruned and updated weight, mask of pruned weights) for `weight` (N, K) with input Hessian (K, K).

    Weights in `already` (an earlier step's mask) are pruned first in their block and stay zero.
    """
    n_rows, k = weight.shape
    total = pruned_per_row(k, ratio)
    w = weight.detach().double().clone()
    mask = torch.zeros(n_rows, k, dtype=torch.bool)
    if total == 0:
        return weight.detach().clone(), mask
    factor = _inverse_hessian_factor(hessian, dampening)
    done = torch.zeros(n_rows, dtype=torch.long)  # weights each row has pruned so far
    for start in range(0, k, block_size):
        stop = min(start + block_size, k)
        block, inv = w[:, start:stop].clone(), factor[start:stop, start:stop]
        saliency = block.square() / torch.diag(inv).square().unsqueeze(0)
        # each row catches up with round(ratio * stop); an earlier step's zeros are pruned first
        due = torch.full((n_rows,), round(ratio * stop)) - done
        if already is not None:
            earlier = already[:, start:stop]
            saliency[earlier] = -torch.inf
            due = torch.maximum(due, earlier.sum(dim=1))
        block_mask = _lowest(saliency, due.clamp(0, stop - start))
        done += block_mask.sum(dim=1)
        errors = torch.zeros_like(block)
        for i in range(stop - start):
            column = block[:, i]
            kept = torch.where(block_mask[:, i], torch.zeros_like(column), column)
            error = (column - kept) / inv[i, i]
            block[:, i:] -= error.unsqueeze(1) * inv[i, i:].unsqueeze(0)
            block[:, i] = kept
            errors[:, i] = error
        w[:, start:stop] = block
        w[:, stop:] -= errors @ factor[start:stop, stop:]
        mask[:, start:stop] = block_mask
    w[mask] = 0
    return w.to(weight.dtype), mask


def _lowest(scores: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """(N, B) bool: the counts[r] lowest scores of each row r."""
    order = scores.argsort(dim=1, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(scores.shape[1]).expand_as(order))
    return rank < counts.unsqueeze(1)
