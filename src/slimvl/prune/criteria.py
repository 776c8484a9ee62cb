"""Pruning scores, higher = more important: magnitude |W| and Wanda |W| * ||x_j|| (Sun et al., 2023).

`InputNorms` accumulates the squared L2 norm of each input channel over calibration tokens (what Wanda
needs); `InputHessian` accumulates X Xᵀ (what SparseGPT needs). Both observe a linear's input.
"""

from __future__ import annotations

import torch


def magnitude_scores(weight: torch.Tensor) -> torch.Tensor:
    return weight.detach().abs().float()


def wanda_scores(weight: torch.Tensor, input_sq_norms: torch.Tensor) -> torch.Tensor:
    """|W_ij| * ||X_j||_2, with `input_sq_norms` the per-input-channel sums of squares (K,)."""
    return weight.detach().abs().float() * input_sq_norms.float().sqrt().unsqueeze(0)


class InputNorms:
    """Sum over calibration tokens of x_j² per input channel j of one linear."""

    def __init__(self, in_features: int) -> None:
        self.sq_norms = torch.zeros(in_features, dtype=torch.float64)
        self.tokens = 0

    def add(self, x: torch.Tensor) -> None:
        rows = x.detach().reshape(-1, x.shape[-1]).double()
        self.sq_norms += rows.square().sum(dim=0)
        self.tokens += rows.shape[0]


class InputHessian:
    """H = 2/n Σ x xᵀ over the n calibration tokens of one linear's input (the layer-wise reconstruction
    loss's Hessian), kept as a running mean."""

    def __init__(self, in_features: int) -> None:
        self.hessian = torch.zeros(in_features, in_features, dtype=torch.float64)
        self.tokens = 0

    def add(self, x: torch.Tensor) -> None:
        rows = x.detach().reshape(-1, x.shape[-1]).double()
        n = rows.shape[0]
        total = self.tokens + n
        self.hessian *= self.tokens / total
        self.hessian += (2.0 / total) * (rows.T @ rows)
        self.tokens = total
