"""Calibration: statistics of the inputs of chosen linears while calibration requests run."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

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

    def __call__(self, module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
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
    modules: dict[str, nn.Module], feed: Callable[[], None], percentile: float = 0.999
) -> dict[str, ActStats]:
    """Record the input statistics of each of ``modules`` while ``feed()`` runs the model.

    ``feed`` runs the calibration requests (images and prompts through the model); every module must
    see at least one input, or ValueError names those that did not (e.g. vision layers with a feed
    that has no images).
    """
    observers = {name: _Observer(percentile) for name in modules}
    handles = [module.register_forward_pre_hook(observers[name]) for name, module in modules.items()]
    try:
        with torch.inference_mode():
            feed()
    finally:
        for handle in handles:
            handle.remove()
    stats = {name: obs.stats for name, obs in observers.items()}
    missing = [name for name, st in stats.items() if st is None]
    if missing:
        raise ValueError(
            f"calibration never ran {len(missing)} module(s), e.g. {missing[0]}: the feed must exercise them"
        )
    # Cloned outside inference mode: plain tensors, usable later as (loadable) buffers.
    return {
        name: ActStats(st.channel_min.clone(), st.channel_max.clone(), st.abs_percentile, st.tokens)
        for name, st in stats.items()
    }
