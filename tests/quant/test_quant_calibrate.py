from __future__ import annotations

import pytest
import torch
from torch import nn

from slimvl.quant.calibrate import run_calibration


def _running(feed):
    """A calibration run that calls `feed()` with the observers attached."""

    def run(observers, hooks=None) -> int:
        handles = [module.register_forward_pre_hook(o, with_kwargs=True) for module, o in observers.items()]
        try:
            feed()
        finally:
            for handle in handles:
                handle.remove()
        return 1

    return run


def test_statistics_over_all_calls() -> None:
    first, second = nn.Linear(8, 4), nn.Linear(4, 2)
    batches = [torch.randn(2, 3, 8), torch.randn(5, 8) * 4]
    stats = run_calibration(
        {"first": first, "second": second}, _running(lambda: [second(first(x)) for x in batches])
    )
    seen = torch.cat([b.reshape(-1, 8) for b in batches])
    s = stats["first"]
    assert torch.equal(s.channel_min, seen.amin(0)) and torch.equal(s.channel_max, seen.amax(0))
    assert s.tokens == 11 and stats["second"].tokens == 11
    assert torch.equal(s.channel_absmax, seen.abs().amax(0))
    assert s.abs_percentile <= float(seen.abs().max())
    assert s.tensor_range() == (float(seen.min()), float(seen.max()))
    smooth = torch.rand(8) + 0.5
    assert s.tensor_range(smooth) == (float((seen / smooth).min()), float((seen / smooth).max()))


def test_modules_the_feed_never_ran_are_an_error() -> None:
    used, unused = nn.Linear(4, 4), nn.Linear(4, 4)
    with pytest.raises(ValueError, match="never ran 1 module.*unused"):
        run_calibration({"used": used, "unused": unused}, _running(lambda: used(torch.randn(1, 4))))
