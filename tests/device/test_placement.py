"""The placement planner on the real 2B decoder's sizes (built on the meta device: no weights), for a
simulated Pascal laptop GPU (sm_61, 2 GB) and a simulated H100 (sm_90, 80 GB)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import Qwen3VLForConditionalGeneration

from slimvl.device import plan_device
from slimvl.device.dispatch import placement_needs
from slimvl.device.placement import PlacementNeeds, plan_placement
from slimvl.device.spec import CPU, DeviceError, parse_simulated
from slimvl.models.builder import shape_config
from slimvl.quant import Int8Linear

MX250 = parse_simulated("6.1:2GB")
H100 = parse_simulated("9.0:80GB")


def _int8(root: nn.Module) -> None:
    for name, child in list(root.named_children()):
        if type(child) is nn.Linear:
            int8 = Int8Linear(
                child.in_features,
                child.out_features,
                bias=False,
                mode="dynamic",
                kernel="dequant",
                device="meta",
            )
            setattr(root, name, int8)
        else:
            _int8(child)


@pytest.fixture(scope="module")
def model_2b() -> Qwen3VLForConditionalGeneration:
    with torch.device("meta"):
        return Qwen3VLForConditionalGeneration(shape_config("2b"))


@pytest.fixture(scope="module")
def int8_2b() -> Qwen3VLForConditionalGeneration:
    with torch.device("meta"):
        model = Qwen3VLForConditionalGeneration(shape_config("2b"))
    _int8(model.model.language_model.layers)
    _int8(model.model.visual)
    return model


def _check_split(needs: PlacementNeeds, placement, budget: int) -> None:
    """The last layers, contiguous, within the budget, and one more would not fit."""
    count = len(needs.layer_bytes)
    placed = placement.gpu_layers
    assert placed == tuple(range(count - len(placed), count))
    cost = [needs.layer_bytes[i] + needs.kv_bytes_per_layer[i] for i in range(count)]
    assert sum(cost[i] for i in placed) <= budget
    if len(placed) < count:
        assert sum(cost[i] for i in placed) + cost[count - len(placed) - 1] > budget


def test_int8_2b_on_a_2gb_pascal_gpu_is_split(int8_2b) -> None:
    needs = placement_needs(int8_2b)
    assert 50e6 < needs.layer_bytes[0] < 52e6  # 50.3 M int8 weights + their scales
    plan = plan_device(int8_2b, "auto", gpus=[MX250])
    placement = plan.placement
    _check_split(needs, placement, placement.budget_bytes)
    # budget: 2e9 - 400 MiB context - 512 MiB workspace = 1043.7 MB; a layer: 50.4 MB int8 + 16.8 MB KV
    assert len(placement.gpu_layers) == 15 and not placement.vision_on_gpu
    assert plan.rules.int8_matmul == "dequantize" and not plan.rules.fp16_native
    assert "15 of 28 decoder layers on cuda:0 (layers 13-27)" in placement.describe()


def test_fp32_2b_on_a_2gb_gpu_places_few_layers(model_2b) -> None:
    needs = placement_needs(model_2b)
    placement = plan_placement(needs, MX250)
    _check_split(needs, placement, placement.budget_bytes)
    assert 0 < len(placement.gpu_layers) < 28


def test_everything_fits_an_80gb_gpu(int8_2b, model_2b) -> None:
    for model in (int8_2b, model_2b):
        plan = plan_device(model, "cuda", gpus=[H100])
        assert plan.placement.gpu_layers == tuple(range(28)) and plan.placement.vision_on_gpu
        assert plan.rules.int8_matmul == "int_mm" and plan.rules.bf16_native


def test_forced_pascal_rules_on_a_newer_gpu(int8_2b) -> None:
    plan = plan_device(int8_2b, "cuda", rules_capability=(6, 1), gpus=[H100])
    assert plan.rules.int8_matmul == "dequantize" and plan.placement.vision_on_gpu


def test_asked_layers_are_placed_or_refused_with_the_most_that_fit(int8_2b) -> None:
    needs = placement_needs(int8_2b)
    placement = plan_placement(needs, MX250, gpu_layers=4)
    assert placement.gpu_layers == (24, 25, 26, 27) and placement.reason == "asked for"
    with pytest.raises(DeviceError, match="--gpu-layers 20: .* at most 15 fit"):
        plan_placement(needs, MX250, gpu_layers=20)
    with pytest.raises(DeviceError, match="allowed: 0 to 28"):
        plan_placement(needs, MX250, gpu_layers=29)


def test_a_gpu_too_small_for_one_layer(int8_2b) -> None:
    tiny_gpu = parse_simulated("6.1:1GB")
    assert plan_device(int8_2b, "auto", gpus=[tiny_gpu]).placement.gpu_layers == ()
    with pytest.raises(DeviceError, match="--device cuda: not one decoder layer fits"):
        plan_device(int8_2b, "cuda", gpus=[tiny_gpu])


def test_cpu_takes_no_gpu_layers(int8_2b) -> None:
    needs = placement_needs(int8_2b)
    assert not plan_placement(needs, CPU).on_gpu
    with pytest.raises(DeviceError, match="--gpu-layers: needs a GPU"):
        plan_placement(needs, CPU, gpu_layers=2)
