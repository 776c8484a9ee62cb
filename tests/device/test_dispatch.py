"""A placement applied to a loaded model, with the CPU standing in for the GPU (CI has none): the placed
layers run in their device formats behind accelerate's device hooks, through both the prefill
(transformers' decoder) and the lean decode loop, and give the tokens of the same weights unplaced."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

import slimvl
from slimvl.device.dispatch import dispatch
from slimvl.device.modules import DeviceInt8Linear
from slimvl.device.placement import Placement
from slimvl.device.rules import rules_for
from slimvl.models.decode import StaticKVCache, layer_device
from slimvl.quant import Int8Linear


def _widened_copy(root: nn.Module) -> None:
    """Every int8 linear under `root` as a float linear of its dequantized weight (the reference)."""
    for name, child in list(root.named_children()):
        if isinstance(child, Int8Linear):
            state = child.state_dict()
            plain = nn.Linear(child.in_features, child.out_features, bias=state.get("bias") is not None)
            plain.weight.data = state["qweight"].float() * state["w_scale"][:, None]
            if state.get("bias") is not None:
                plain.bias.data = state["bias"].float()
            setattr(root, name, plain)
        else:
            _widened_copy(child)


def test_placed_layers_give_the_tokens_of_their_weights(small_checkpoint: Path, square_image) -> None:
    placed = slimvl.load(str(small_checkpoint), "int8")
    reference = slimvl.load(str(small_checkpoint), "int8")
    layers = len(placed.loaded.model.model.language_model.layers)
    gpu_layers = tuple(range(layers - 2, layers))
    placement = Placement("cpu", gpu_layers, True, 0, 0, layers, "test")
    dispatch(placed.loaded.model, placement, rules_for((6, 1)))
    text = placed.loaded.model.model.language_model
    assert all(isinstance(text.layers[i].mlp.down_proj, DeviceInt8Linear) for i in gpu_layers)
    assert isinstance(text.layers[0].mlp.down_proj, Int8Linear)  # not placed: unchanged
    assert hasattr(text.layers[gpu_layers[0]], "_hf_hook") and hasattr(text.norm, "_hf_hook")
    for i in gpu_layers:
        _widened_copy(reference.loaded.model.model.language_model.layers[i])
    _widened_copy(reference.loaded.model.model.visual)
    a = placed.generate([square_image], "What color?", max_new_tokens=8, ignore_eos=True)
    b = reference.generate([square_image], "What color?", max_new_tokens=8, ignore_eos=True)
    assert a.token_ids == b.token_ids
    torch.testing.assert_close(a.first_logits, b.first_logits, rtol=0, atol=0)


def test_the_kv_cache_follows_each_layer(small_checkpoint: Path) -> None:
    slim = slimvl.load(str(small_checkpoint))
    text = slim.loaded.model.model.language_model
    cache = StaticKVCache.allocate(text, 16, torch.float32)
    assert [k.device for k in cache.keys] == [layer_device(layer) for layer in text.layers]
