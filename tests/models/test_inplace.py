from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import nn
from transformers.activations import GELUTanh
from transformers.models.qwen3_vl.modeling_qwen3_vl import Qwen3VLTextMLP

from slimvl.models.inplace import InplaceActivation, use_inplace_activations
from slimvl.models.loader import load_model
from slimvl.models.steps import build_sequence, encode_images, prefill


def _vision_and_logits(
    loaded, images: list[Image.Image]
) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
    inputs = loaded.preprocessor(images, "Which shape is red?")
    with torch.inference_mode():
        visual = encode_images(loaded.model, inputs)
        logits, _ = prefill(loaded.model, build_sequence(loaded.model, inputs, visual))
    return visual.embeds, visual.deepstack, logits


def test_same_numbers_bit_for_bit(
    small_checkpoint: Path, square_image: Image.Image, tall_image: Image.Image
) -> None:
    loaded = load_model(str(small_checkpoint))
    images = [tall_image, square_image]
    before = _vision_and_logits(loaded, images)

    config = loaded.model.config
    mlps = config.vision_config.depth + 1 + len(config.vision_config.deepstack_visual_indexes)
    mlps += config.text_config.num_hidden_layers
    assert use_inplace_activations(loaded.model) == mlps
    after = _vision_and_logits(loaded, images)

    assert torch.equal(before[0], after[0])
    assert all(torch.equal(a, b) for a, b in zip(before[1], after[1], strict=True))
    assert torch.equal(before[2], after[2])
    assert use_inplace_activations(loaded.model) == 0  # already swapped: nothing left to swap


@pytest.mark.parametrize("act", [GELUTanh(), nn.GELU(), nn.GELU(approximate="tanh"), nn.SiLU()])
def test_overwrites_its_input_only_without_autograd(act: nn.Module) -> None:
    mlp = Qwen3VLTextMLP.__new__(Qwen3VLTextMLP)
    nn.Module.__init__(mlp)
    mlp.act_fn = act
    assert use_inplace_activations(mlp) == 1
    x = torch.randn(5, 64)
    expected = act(x)

    with torch.inference_mode():
        buffer = x.clone()
        out = mlp.act_fn(buffer)
    assert out.data_ptr() == buffer.data_ptr() and torch.equal(out, expected)

    leaf = x.clone().requires_grad_(True)
    out = mlp.act_fn(leaf)
    out.sum().backward()
    assert out.data_ptr() != leaf.data_ptr() and torch.equal(leaf.detach(), x)
    assert torch.equal(out.detach(), expected)


def test_python_formula_gelu_left_alone() -> None:
    mlp = Qwen3VLTextMLP.__new__(Qwen3VLTextMLP)
    nn.Module.__init__(mlp)
    mlp.act_fn = GELUTanh(use_gelu_tanh_python=True)
    assert use_inplace_activations(mlp) == 0
    assert not isinstance(mlp.act_fn, InplaceActivation)
