"""Calibration: statistics of the inputs of chosen linears while calibration requests run."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from slimvl.models.hooks import RunCalibration

_PERCENTILE_SAMPLE = 1 << 16  # |x| values per call the percentile is estimated from


@dataclass
class ActStats:
    """Per-input-channel min and max of a linear's input over all calibration tokens, and a high
    percentile of |x| (the largest per-call estimate: outliers show as absmax ≫ percentile)."""

    channel_min: torch.Tensor  # (K,)
    channel_max: torch.Tensor  # (K,)
    abs_percentile: float
    tokens: int

    @property
    def channel_absmax(self) -> torch.Tensor:
        return torch.maximum(self.channel_min.abs(), self.channel_max.abs())

    def tensor_range(self, smooth: torch.Tensor | None = None) -> tuple[float, float]:
        """(min, max) of the whole input, or of ``input / smooth`` (exact: ``smooth`` > 0 per channel)."""
        lo, hi = self.channel_min, self.channel_max
        if smooth is not None:
            lo, hi = lo / smooth, hi / smooth
        return float(lo.min()), float(hi.max())


class _Observer:
    def __init__(self, percentile: float) -> None:
        self.percentile = percentile
        self.stats: ActStats | None = None

    def __call__(self, module: nn.Module, args: tuple[torch.Tensor, ...], kwargs: dict) -> None:
        x = args[0].detach().reshape(-1, args[0].shape[-1]).float()
        lo, hi = x.aminmax(dim=0)
        flat = x.abs().flatten()
        step = max(1, flat.numel() // _PERCENTILE_SAMPLE)
        p = float(torch.quantile(flat[::step], self.percentile))
        s = self.stats
        if s is None:
            self.stats = ActStats(lo, hi, p, x.shape[0])
        else:
            self.stats = ActStats(
                torch.minimum(s.channel_min, lo),
                torch.maximum(s.channel_max, hi),
                max(s.abs_percentile, p),
                s.tokens + x.shape[0],
            )


def run_calibration(
    modules: dict[str, nn.Module], run: RunCalibration, percentile: float = 0.999
) -> dict[str, ActStats]:
    """Record the input statistics of each of ``modules`` while ``run`` feeds the calibration requests
    through the model.

    Every module must see at least one input, or ValueError names those that did not (e.g. vision
    layers with requests that have no images).
    """
    observers = {name: _Observer(percentile) for name in modules}
    run({module: observers[name] for name, module in modules.items()})
    stats = {name: obs.stats for name, obs in observers.items()}
    missing = [name for name, st in stats.items() if st is None]
    if missing:
        raise ValueError(
            f"calibration never ran {len(missing)} module(s), e.g. {missing[0]}: the requests must exercise them"
        )
    # Cloned outside inference mode: plain tensors, usable later as (loadable) buffers.
    return {
        name: ActStats(st.channel_min.clone(), st.channel_max.clone(), st.abs_percentile, st.tokens)
        for name, st in stats.items()
    }
