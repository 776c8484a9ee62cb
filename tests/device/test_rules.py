import pytest
import torch

from slimvl.device.rules import parse_capability, rules_for


def test_pascal_sm61_computes_fp16_and_bf16_in_fp32_and_widens_int8() -> None:
    rules = rules_for((6, 1))
    assert not rules.fp16_native and not rules.bf16_native and rules.int8_matmul == "dequantize"
    assert rules.compute_dtype(torch.float16) == torch.float32
    assert rules.compute_dtype(torch.bfloat16) == torch.float32
    assert any("1/64" in note for note in rules.notes)


def test_hopper_sm90_computes_natively_and_uses_int_mm() -> None:
    rules = rules_for((9, 0))
    assert rules.fp16_native and rules.bf16_native and rules.int8_matmul == "int_mm"
    assert rules.compute_dtype(torch.float16) == torch.float16
    assert rules.compute_dtype(torch.bfloat16) == torch.bfloat16
    assert rules.notes == ()


@pytest.mark.parametrize(
    ("capability", "fp16", "bf16", "int8"),
    [
        ((5, 2), False, False, "dequantize"),
        ((6, 0), True, False, "dequantize"),  # P100: fast fp16
        ((7, 0), True, False, "dequantize"),  # V100: no integer tensor cores in cuBLASLt's IMMA path
        ((7, 5), True, False, "int_mm"),  # Turing
        ((8, 6), True, True, "int_mm"),
    ],
)
def test_rules_by_generation(capability, fp16: bool, bf16: bool, int8: str) -> None:
    rules = rules_for(capability)
    assert (rules.fp16_native, rules.bf16_native, rules.int8_matmul) == (fp16, bf16, int8)
    assert rules.compute_dtype(torch.float32) == torch.float32


def test_capability_text() -> None:
    assert parse_capability("6.1") == (6, 1)
    with pytest.raises(ValueError, match="MAJOR.MINOR"):
        parse_capability("sm_61")
