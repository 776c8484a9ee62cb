"""The device formats compute what their stored weights mean; they run on the CPU here as on a GPU."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from slimvl.device.dispatch import device_bytes
from slimvl.device.modules import (
    DeviceFloatLinear,
    DeviceInt4Linear,
    DeviceInt8Linear,
    convert_linears,
    device_linear,
)
from slimvl.device.rules import rules_for
from slimvl.precision import int4_math
from slimvl.precision.float_linear import FloatLinear
from slimvl.precision.int4_modules import Int4Linear
from slimvl.quant import Int8Linear


@pytest.fixture
def linear() -> nn.Linear:
    torch.manual_seed(0)
    layer = nn.Linear(64, 48)
    return layer


def _int8(linear: nn.Linear) -> Int8Linear:
    return Int8Linear.from_linear(linear, mode="dynamic", kernel="dequant")


def test_int8_widened_is_the_stored_weight_exactly(linear: nn.Linear) -> None:
    source = _int8(linear)
    device = DeviceInt8Linear(source, use_int_mm=False)
    x = torch.randn(3, 5, 64)
    weight = source.state_dict()["qweight"].float() * source.state_dict()["w_scale"][:, None]
    torch.testing.assert_close(device(x), F.linear(x, weight, linear.bias), rtol=0, atol=0)
    torch.testing.assert_close(device(x), linear(x), rtol=0.05, atol=0.02)  # int8 weights: close
    assert device_bytes(source) == sum(t.numel() * t.element_size() for t in device.buffers())


def test_int8_int_mm_is_the_integer_product_of_per_token_codes(linear: nn.Linear) -> None:
    source = _int8(linear)
    device = DeviceInt8Linear(source, use_int_mm=True)
    x = torch.randn(20, 64)  # more than 16 rows: torch._int_mm
    codes, scale = int4_math.quantize_activations(x)
    q, w_scale = source.state_dict()["qweight"], source.state_dict()["w_scale"]
    dots = (codes.double() @ q.double().T).float()
    torch.testing.assert_close(device(x), dots * scale[:, None] * w_scale + linear.bias, rtol=0, atol=0)
    few = torch.randn(2, 64)  # 16 rows or fewer: widened, as on a GPU without int_mm
    torch.testing.assert_close(device(few), DeviceInt8Linear(source, use_int_mm=False)(few), rtol=0, atol=0)


def test_int4_widened_is_the_format_dequantized(linear: nn.Linear) -> None:
    source = Int4Linear.from_linear(linear, prefill_kernel="python")
    device = DeviceInt4Linear(source)
    torch.testing.assert_close(device.widened(), int4_math.dequantize_weight(source.weight4), rtol=0, atol=0)
    x = torch.randn(4, 64)
    torch.testing.assert_close(device(x), F.linear(x, device.widened(), source.bias), rtol=0, atol=0)
    assert device.codes.numel() == 48 * 32  # still two codes a byte


def test_16_bit_weights_compute_by_the_rules(linear: nn.Linear) -> None:
    source = FloatLinear.from_linear(linear, "fp16")
    pascal = device_linear(source, rules_for((6, 1)))
    hopper = device_linear(source, rules_for((9, 0)))
    assert isinstance(pascal, DeviceFloatLinear) and pascal.weight.dtype == torch.float16
    assert pascal.compute == torch.float32 and hopper.compute == torch.float16
    x = torch.randn(2, 64)
    expected = F.linear(x, source.weight.float()) + linear.bias
    torch.testing.assert_close(pascal(x), expected, rtol=0, atol=0)


def test_convert_replaces_every_known_linear_and_keeps_the_rest(linear: nn.Linear) -> None:
    block = nn.Sequential(_int8(linear), nn.ReLU(), nn.Linear(48, 8))
    convert_linears(block, rules_for((6, 1)))
    assert isinstance(block[0], DeviceInt8Linear) and not block[0].use_int_mm
    assert type(block[2]) is nn.Linear  # fp32 stays as stored
