"""Row-wise pruning masks: within each output row, the weights with the lowest scores go.

Wanda and SparseGPT compare weights within an output row (a row's weights all feed one output, so
their scores are comparable); so does magnitude pruning here, for a like-for-like table. Each row loses
exactly `pruned_per_row(in_features, ratio)` weights.
"""

from __future__ import annotations

import torch


def pruned_per_row(in_features: int, ratio: float) -> int:
    """Weights each row loses at `ratio`: round(ratio * in_features)."""
    if not 0 <= ratio < 1:
        raise ValueError(f"ratio: got {ratio!r}, allowed: a number in [0, 1)")
    return round(ratio * in_features)


def row_mask(scores: torch.Tensor, ratio: float, already: torch.Tensor | None = None) -> torch.Tensor:
    """(N, K) bool, True where a weight is pruned: the `pruned_per_row(K, ratio)` lowest `scores` of each
    row. Weights in `already` (pruned at an earlier step) are pruned first, so that masks only grow
    (at most as many per row as `ratio` allows)."""
    n_prune = pruned_per_row(scores.shape[1], ratio)
    mask = torch.zeros(scores.shape, dtype=torch.bool, device=scores.device)
    if n_prune == 0:
        return mask
    ranked = scores.float().clone()
    if already is not None:
        ranked[already] = -torch.inf
    lowest = ranked.topk(n_prune, dim=1, largest=False).indices
    return mask.scatter_(1, lowest, True)


def sparsity(weight: torch.Tensor) -> float:
    """Share of exact zeros in `weight`."""
    return float((weight == 0).sum()) / weight.numel()
