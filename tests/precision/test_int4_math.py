"""The int4 format: packing round-trips, the codes and multipliers stay in range, the stored weight is
close to the float one, and the integer dot is the exact sum the format defines."""

from __future__ import annotations

import pytest
import torch

from slimvl.precision import int4_math
from slimvl.precision.int4_math import GROUP


@pytest.mark.parametrize("k", [32, 96, 512, 512 + 64, 2048])
def test_packing_round_trips_with_and_without_a_partial_block(k: int) -> None:
    codes = torch.randint(0, 16, (5, k), dtype=torch.uint8, generator=torch.Generator().manual_seed(k))
    packed = int4_math.pack_codes(codes)
    assert packed.shape == (5, k // 2)
    assert torch.equal(int4_math.unpack_codes(packed), codes)


def test_quantized_weight_is_in_range_and_close_to_the_float_one() -> None:
    w = torch.randn(48, 1024, generator=torch.Generator().manual_seed(0))
    q = int4_math.quantize_weight(w)
    assert q.codes.dtype == torch.uint8 and q.mult.dtype == torch.uint8
    assert int(q.mult.min()) >= 1 and int(q.mult.max()) <= int4_math.MULTIPLIERS
    error = int4_math.dequantize_weight(q) - w
    sqnr_db = 10 * torch.log10(w.square().sum() / error.square().sum())
    assert sqnr_db > 20  # 4 bits with per-group scales: ~21 dB on Gaussian weights


def _group_error(group: torch.Tensor, step: torch.Tensor) -> float:
    return float((group - torch.round(group / step).clamp(-8, 7) * step).square().sum())


def test_each_group_takes_the_multiplier_with_the_least_error_of_its_window() -> None:
    w = torch.randn(3, 2 * GROUP, generator=torch.Generator().manual_seed(1))
    q = int4_math.quantize_weight(w)
    groups = w.reshape(3, 2, GROUP)
    for row in range(3):
        for g in range(2):
            low = int(groups[row, g].abs().max() / (8 * q.row_scale[row])) - 1
            window = [m for m in range(low, low + int4_math.SEARCH_WIDTH) if 1 <= m <= 15]
            errors = {m: _group_error(groups[row, g], q.row_scale[row] * m) for m in window}
            assert int(q.mult[row, g]) == min(errors, key=errors.get)


def test_the_window_loses_almost_nothing_against_searching_all_multipliers() -> None:
    w = torch.randn(64, 256, generator=torch.Generator().manual_seed(4)) * torch.rand(64, 1)
    q = int4_math.quantize_weight(w)
    groups = w.reshape(64, -1, GROUP)
    chosen = full = 0.0
    for row in range(64):
        for g in range(groups.shape[1]):
            errors = [_group_error(groups[row, g], q.row_scale[row] * m) for m in range(1, 16)]
            chosen += errors[int(q.mult[row, g]) - 1]
            full += min(errors)
    assert chosen <= full * 1.01


def test_offsets_are_the_activation_offset_term() -> None:
    q = int4_math.quantize_weight(torch.randn(7, 64))
    expected = 128 * int4_math.integer_weight(q).to(torch.int64).sum(dim=1)
    assert torch.equal(q.offsets.to(torch.int64), expected)


def test_integer_dot_is_the_exact_integer_sum() -> None:
    gen = torch.Generator().manual_seed(2)
    q = int4_math.quantize_weight(torch.randn(6, 96, generator=gen))
    x = torch.randn(3, 96, generator=gen)
    codes, scale = int4_math.quantize_activations(x)
    u = int4_math.unpack_codes(q.codes).to(torch.int64) - 8
    m = q.mult.to(torch.int64).repeat_interleave(GROUP, dim=1)
    exact = codes.to(torch.int64) @ (u * m).T
    assert torch.equal(int4_math.integer_dot(codes, q), exact.double())
    assert torch.equal(scale, x.abs().amax(dim=1) / 127)
    assert int(codes.abs().max()) == 127  # each row's absmax maps to ±127


def test_a_weight_with_a_partial_group_is_refused() -> None:
    assert not int4_math.supports((8, 4304))
    with pytest.raises(ValueError, match="multiple of the group size"):
        int4_math.quantize_weight(torch.randn(4, 40))
