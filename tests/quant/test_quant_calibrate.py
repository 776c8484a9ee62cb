from __future__ import annotations

import pytest
import torch
from torch import nn

from slimvl.quant.calibrate import run_calibration


def test_statistics_over_all_calls() -> None:
    first, second = nn.Linear(8, 4), nn.Linear(4, 2)
    batches = [torch.randn(2, 3, 8), torch.randn(5, 8) * 4]
    stats = run_calibration({"first": first, "second": second}, lambda: [second(first(x)) for x in batches])
    seen = torch.cat([b.reshape(-1, 8) for b in batches])
    s = stats["first"]
    assert torch.equal(s.channel_min, seen.amin(0)) and torch.equal(s.channel_max, seen.amax(0))
    assert s.tokens == 11 and stats["second"].tokens == 11
    assert torch.equal(s.channel_absmax, seen.abs().amax(0))
    assert s.abs_percentile <= float(seen.abs().max())
    assert s.tensor_range() == (float(seen.min()), float(seen.max()))
    smooth = torch.rand(8) + 0.5
    assert s.tensor_range(smooth) == (float((seen / smooth).min()), float((seen / smooth).max()))
    assert not first._forward_pre_hooks  # hooks removed


def test_modules_the_feed_never_ran_are_an_error() -> None:
    used, unused = nn.Linear(4, 4), nn.Linear(4, 4)
    with pytest.raises(ValueError, match="never ran 1 module.*unused"):
        run_calibration({"used": used, "unused": unused}, lambda: used(torch.randn(1, 4)))
