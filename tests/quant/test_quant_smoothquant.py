"""SmoothQuant: folding keeps the float function, and migration reduces W8A8 error on outlier channels."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from slimvl.config import INT8QuantizationConfig
from slimvl.models.loader import LoadedModel
from slimvl.quant.calibrate import run_calibration
from slimvl.quant.int8_math import smooth_scales, sqnr_db
from slimvl.quant.kernels import ActQuant, usable_kernels
from slimvl.quant.linear import Int8Linear
from slimvl.quant.smoothquant import migrate_outliers, smooth_groups
from slimvl.quant.targets import select_linears


def test_groups_of_the_qwen3vl_layout(small_model: LoadedModel) -> None:
    model = small_model.model
    groups = {
        g.source: g.linears for g in smooth_groups(model, select_linears(model, INT8QuantizationConfig()))
    }
    layer = "model.language_model.layers.1"
    assert groups[f"{layer}.input_layernorm"] == tuple(f"{layer}.self_attn.{p}_proj" for p in "qkv")
    assert groups[f"{layer}.post_attention_layernorm"] == (f"{layer}.mlp.gate_proj", f"{layer}.mlp.up_proj")
    assert groups[f"{layer}.mlp.up_proj"] == (f"{layer}.mlp.down_proj",)
    assert groups["model.visual.blocks.0.norm1"] == ("model.visual.blocks.0.attn.qkv",)
    assert groups["model.visual.deepstack_merger_list.0.norm"] == (
        "model.visual.deepstack_merger_list.0.linear_fc1",
    )
    assert "model.visual.merger.norm" not in groups  # pre-shuffle norm: 1/4 of fc1's input width
    no_attention = INT8QuantizationConfig(quantize_attention=False)
    assert f"{layer}.input_layernorm" not in {
        g.source for g in smooth_groups(model, select_linears(model, no_attention))
    }


def test_folding_keeps_the_float_model(small_model: LoadedModel, logits_of, calibration_feed) -> None:
    model = copy.deepcopy(small_model.model)
    targets = select_linears(model, INT8QuantizationConfig())
    stats = run_calibration(targets, calibration_feed(model))
    norm = model.get_submodule("model.language_model.layers.0.input_layernorm")
    before = norm.weight.clone()
    smoothing = migrate_outliers(model, targets, stats, alpha=0.5)
    assert {how for _, how in smoothing.values()} == {"folded", "runtime"}
    assert not torch.equal(norm.weight, before)  # the factors really went into the norm
    q, k = (smoothing[f"model.language_model.layers.0.self_attn.{p}_proj"][0] for p in "qk")
    assert q is k  # one factor per shared input
    ref = logits_of(small_model.model)
    torch.testing.assert_close(logits_of(model), ref, rtol=1e-5, atol=1e-5 * float(ref.abs().max()))


@pytest.mark.parametrize("mode", ["dynamic", "static"])
def test_migration_reduces_error_with_outlier_channels(mode: str) -> None:
    torch.manual_seed(0)
    linear = nn.Linear(512, 256, bias=False).requires_grad_(False)
    nn.init.normal_(linear.weight, std=0.05)
    x = torch.randn(64, 512)
    x[:, [3, 100, 400]] *= 60  # a few outlier channels, as in LLM activations
    s = smooth_scales(x.abs().amax(0), linear.weight, alpha=0.5)
    ref = linear(x)
    kernel = usable_kernels((256, 512), ActQuant(127))[0]

    def error(smooth: torch.Tensor | None) -> float:
        xs = x if smooth is None else x / smooth
        act_range = (float(xs.min()), float(xs.max())) if mode == "static" else None
        module = Int8Linear.from_linear(linear, mode, kernel, smooth=smooth, act_range=act_range)
        return sqnr_db(ref, module(x))

    plain, smoothed = error(None), error(s)
    assert smoothed > plain + 6, f"SQNR {plain:.1f} dB -> {smoothed:.1f} dB"
