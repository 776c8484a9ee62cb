from __future__ import annotations

import pytest
import torch

from slimvl.quant.int8_math import (
    activation_qmax,
    affine_qparams,
    dequantize_affine,
    dequantize_per_channel,
    int8_matmul_accumulate,
    int8_matmul_reference,
    quantize_activation_per_tensor,
    quantize_activation_per_token,
    quantize_affine,
    quantize_embedding_per_row,
    quantize_weight_per_channel,
    smooth_scales,
    sqnr_db,
    static_qparams,
)


def vpmaddubsw_dot(xq: torch.Tensor, wq: torch.Tensor) -> torch.Tensor:
    """What AVX2 without VNNI computes: u8×s8 products summed in adjacent pairs into a saturating
    int16 (vpmaddubsw), then the pairs summed in int32 (vpmaddwd with ones)."""
    products = xq.to(torch.int64)[:, None, :] * wq.to(torch.int64)[None, :, :]
    pairs = (products[..., 0::2] + products[..., 1::2]).clamp(-32768, 32767)
    return pairs.sum(-1)


def test_weight_per_channel_scales_and_error() -> None:
    w = torch.randn(64, 48) * torch.logspace(-3, 1, 64)[:, None]
    w[5] = 0
    q, scale = quantize_weight_per_channel(w)
    assert q.dtype == torch.int8 and scale.dtype == torch.float32 and scale.shape == (64,)
    assert int(q.abs().max()) == 127 and int(q.min()) >= -127
    assert scale[5] == 1 and not q[5].any()  # zero row: safe scale, zero codes
    assert torch.all(q.abs().amax(1)[torch.arange(64) != 5] == 127)  # each row uses its full range
    assert torch.all((dequantize_per_channel(q, scale) - w).abs() <= scale[:, None] / 2 + 1e-7)


def test_embedding_rows_use_the_per_channel_math() -> None:
    table = torch.randn(100, 16)
    for a, b in zip(quantize_embedding_per_row(table), quantize_weight_per_channel(table), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("reduce_range", [True, False])
def test_activation_per_token(reduce_range: bool) -> None:
    qmax = activation_qmax(reduce_range)
    x = torch.randn(6, 40) * torch.tensor([1e-3, 1, 10, 100, 0, 1])[:, None]
    x[1] = x[1].abs()  # all positive: range [0, max]
    q, scale, zp = quantize_activation_per_token(x, reduce_range)
    assert q.dtype == torch.uint8 and int(q.max()) <= qmax and scale.shape == zp.shape == (6, 1)
    assert zp[1] == 0 and int(q[1].max()) == qmax
    assert scale[4] == 1 and torch.all(dequantize_affine(q[4], scale[4], zp[4]) == 0)  # zero row
    assert torch.all((dequantize_affine(q, scale, zp) - x).abs() <= scale / 2 * (1 + 1e-5))


def test_activation_per_tensor_and_static() -> None:
    x = torch.randn(8, 32)
    q, scale, zp = quantize_activation_per_tensor(x)
    lo, hi = float(x.min()), float(x.max())
    assert float(scale) == pytest.approx((hi - lo) / 127) and int(q.max()) == 127 and int(q.min()) == 0
    s, z = static_qparams(-1.0, 3.0)
    assert s == pytest.approx(4 / 127) and z == round(127 / 4)
    codes = quantize_affine(torch.tensor([-5.0, 0.0, 3.0, 10.0]), s, z, 127)
    assert codes.tolist() == [0, z, 127, 127]  # 0 is exact; outside the calibrated range saturates
    assert static_qparams(0.0, 0.0) == (1.0, 0)
    scale, zp = affine_qparams(torch.tensor(2.0), torch.tensor(5.0), 127)  # range forced to contain 0
    assert float(scale) == pytest.approx(5 / 127) and int(zp) == 0


def test_smooth_scales_formula_and_safety() -> None:
    act = torch.tensor([4.0, 1.0, 0.0, 9.0])
    w = torch.tensor([[1.0, -0.25, 3.0, 0.0], [-2.0, 0.5, 1.0, 0.0]])
    s = smooth_scales(act, w, alpha=0.5)
    assert s[0] == pytest.approx(4**0.5 / 2**0.5) and s[1] == pytest.approx(1 / 0.5**0.5)
    assert s[2] == 1 and s[3] == 1  # never-active channel, all-zero weight column
    assert torch.allclose(smooth_scales(act, w, 1.0)[:2], act[:2])
    x = torch.randn(5, 4) * act.clamp(min=1)
    torch.testing.assert_close((x / s) @ (w * s).T, x @ w.T)  # migration keeps the product


def test_reference_is_the_exact_integer_product() -> None:
    gen = torch.Generator().manual_seed(0)
    xq = torch.randint(0, 128, (4, 300), dtype=torch.uint8, generator=gen)
    wq = torch.randint(-127, 128, (7, 300), dtype=torch.int8, generator=gen)
    acc = int8_matmul_accumulate(xq, 3, wq)
    assert acc.dtype == torch.int64
    assert int(acc[2, 5]) == sum((int(a) - 3) * int(b) for a, b in zip(xq[2], wq[5], strict=True))
    w_scale = torch.rand(7) + 0.1
    y = int8_matmul_reference(xq, 0.25, 3, wq, w_scale, bias=torch.ones(7))
    torch.testing.assert_close(y, (acc.double() * 0.25 * w_scale.double() + 1).float())
    per_token = int8_matmul_reference(xq, torch.full((4, 1), 0.25), torch.full((4, 1), 3), wq, w_scale)
    torch.testing.assert_close(per_token + 1, y)


def test_overflow_inputs_saturate_a_naive_vpmaddubsw_only_at_full_range() -> None:
    """The inputs the kernel tests use: activations at the max code, weights all ±127."""
    wq = torch.full((2, 64), 127, dtype=torch.int8)
    wq[1] = -127
    for qmax, saturates in ((255, True), (127, False)):
        xq = torch.full((1, 64), qmax, dtype=torch.uint8)
        exact = int8_matmul_accumulate(xq, 0, wq)
        assert torch.equal(vpmaddubsw_dot(xq, wq), exact) != saturates


def test_sqnr() -> None:
    x = torch.randn(1000)
    assert sqnr_db(x, x) == float("inf")
    assert sqnr_db(x, x * 1.01) == pytest.approx(40.0, abs=0.01)
