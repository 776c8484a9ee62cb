"""Shared-input groups: one GEMM over stacked weights gives every member exactly its own output."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import slimvl.quant.apply as apply_module
from slimvl.config import INT8QuantizationConfig
from slimvl.models.loader import LoadedModel
from slimvl.models.weights import weight_bytes
from slimvl.quant import KERNELS, Int8Linear, quantize_model
from slimvl.quant.fused import SharedInputGroup, fuse_shared_inputs, run_shapes
from slimvl.quant.select import KernelChoice

CASES = [
    ("fbgemm_dynamic", "dynamic"),
    ("onednn_w8a8", "dynamic"),
    ("int8pack_bf16", "weight_only"),
    ("dequant", "dynamic"),
]


def _members(kernel: str, mode: str, outs=(64, 32, 32), k: int = 64, bias: bool = True) -> list[Int8Linear]:
    if not KERNELS[kernel].available():
        pytest.skip(f"{kernel} is not available here")
    torch.manual_seed(0)
    return [Int8Linear.from_linear(nn.Linear(k, n, bias=bias), mode, kernel) for n in outs]


class Block(nn.Module):
    """Three projections of one input, named as in a decoder layer."""

    def __init__(self, members: list[Int8Linear]) -> None:
        super().__init__()
        self.self_attn = nn.Module()
        self.self_attn.q_proj, self.self_attn.k_proj, self.self_attn.v_proj = members


@pytest.mark.parametrize(("kernel", "mode"), CASES)
@pytest.mark.parametrize("rows", [1, 7])
def test_members_get_exactly_their_separate_outputs(kernel: str, mode: str, rows: int) -> None:
    separate = _members(kernel, mode)
    block = Block(copy.deepcopy(separate))
    assert fuse_shared_inputs(block) == 1
    x = torch.randn(1, rows, 64)
    with torch.inference_mode():
        expected = [m(x) for m in separate]
        got = [block.self_attn.q_proj(x), block.self_attn.k_proj(x), block.self_attn.v_proj(x)]
    for e, g in zip(expected, got, strict=True):
        assert torch.equal(e, g)


def test_any_call_order_repeats_and_new_inputs() -> None:
    separate = _members("dequant", "dynamic")
    block = Block(copy.deepcopy(separate))
    fuse_shared_inputs(block)
    q, k, v = block.self_attn.q_proj, block.self_attn.k_proj, block.self_attn.v_proj
    group = q._group
    x, y = torch.randn(3, 64), torch.randn(3, 64)
    with torch.inference_mode():
        assert torch.equal(v(x), separate[2](x))
        assert torch.equal(v(x), separate[2](x))  # asked twice: computed again, still right
        assert torch.equal(q(y), separate[0](y))  # another input
        assert torch.equal(k(x), separate[1](x))
        assert group._output is not None  # q and v of `x` not served yet
        assert torch.equal(q(x), separate[0](x)) and torch.equal(v(x), separate[2](x))
    assert group._input is None and group._output is None  # every member served: nothing held


def test_state_dict_weight_bytes_and_loading_new_weights() -> None:
    separate = _members("fbgemm_dynamic", "dynamic")
    block = Block(copy.deepcopy(separate))
    before = weight_bytes(block)
    fuse_shared_inputs(block)
    assert weight_bytes(block) == before  # the stacked weight is counted once, by its members
    state = block.state_dict()
    for name, member in zip(("q_proj", "k_proj", "v_proj"), separate, strict=True):
        assert torch.equal(state[f"self_attn.{name}.qweight"], member.qweight)
    replacement = _members("fbgemm_dynamic", "dynamic")
    for member in replacement:
        member.qweight = torch.flip(member.qweight, [1])
    block.load_state_dict(Block(replacement).state_dict())
    assert all(m._group is None for m in (block.self_attn.q_proj, block.self_attn.v_proj))
    x = torch.randn(2, 64)
    with torch.inference_mode():
        assert torch.equal(block.self_attn.k_proj(x), replacement[1](x))


def test_copies_carry_plain_weights() -> None:
    block = Block(_members("fbgemm_dynamic", "dynamic"))
    fuse_shared_inputs(block)
    clone = copy.deepcopy(block)
    assert clone.self_attn.q_proj._group is None
    x = torch.randn(2, 64)
    with torch.inference_mode():
        assert torch.equal(clone.self_attn.q_proj(x), block.self_attn.q_proj(x))


def test_unlike_members_stay_apart() -> None:
    members = _members("dequant", "dynamic")
    members[1] = _members("fbgemm_dynamic", "dynamic")[1]
    assert fuse_shared_inputs(Block(members)) == 0
    smooth = _members("dequant", "dynamic")
    smooth[0] = Int8Linear.from_linear(nn.Linear(64, 64), "dynamic", "dequant", smooth=torch.ones(64))
    assert fuse_shared_inputs(Block(smooth)) == 0


def test_quantized_model_fuses_each_decoder_layer_and_keeps_its_logits(
    small_model: LoadedModel, logits_of, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = INT8QuantizationConfig(quantization_mode="dynamic")
    fused = copy.deepcopy(small_model.model)
    quantize_model(fused, config)
    groups = {id(m._group) for m in fused.modules() if isinstance(m, Int8Linear) and m._group}
    layers = len(fused.model.language_model.layers)
    assert len(groups) == 2 * layers  # q/k/v and gate/up of every decoder layer
    mlp = fused.model.language_model.layers[0].mlp
    assert isinstance(mlp.gate_proj._group, SharedInputGroup) and mlp.up_proj._group is mlp.gate_proj._group
    monkeypatch.setattr(apply_module, "fuse_shared_inputs", lambda model: 0)
    plain = copy.deepcopy(small_model.model)
    quantize_model(plain, config)
    assert not any(isinstance(m, Int8Linear) and m._group for m in plain.modules())
    assert torch.equal(logits_of(fused), logits_of(plain))
    assert weight_bytes(fused) == weight_bytes(plain)


def test_run_shapes_stack_whole_groups_only() -> None:
    layer = "model.language_model.layers.3."
    shapes = {
        layer + "self_attn.q_proj": (2048, 2048),
        layer + "self_attn.k_proj": (1024, 2048),
        layer + "self_attn.v_proj": (1024, 2048),
        layer + "self_attn.o_proj": (2048, 2048),
        layer + "mlp.gate_proj": (6144, 2048),  # up_proj not quantized: no group
        layer + "mlp.down_proj": (2048, 6144),
    }
    timed = run_shapes(shapes)
    assert all(timed[layer + f"self_attn.{p}_proj"] == (4096, 2048) for p in "qkv")
    assert timed[layer + "self_attn.o_proj"] == (2048, 2048)
    assert timed[layer + "mlp.gate_proj"] == (6144, 2048) and timed[layer + "mlp.down_proj"] == (2048, 6144)
    shapes[layer + "mlp.up_proj"] = (6144, 2048)
    assert run_shapes(shapes)[layer + "mlp.up_proj"] == (12288, 2048)


def test_a_group_gets_one_kernel_where_its_members_alone_would_race_apart(
    small_model: LoadedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Timed one by one, k/v (narrow) would go to another kernel than q here; timed at the stacked shape
    they run at, all three get one kernel and are fused."""
    names = [n for n, k in KERNELS.items() if k.available() and not k.weight_only]
    if len(names) < 2:
        pytest.skip("one W8A8 kernel only")
    model = copy.deepcopy(small_model.model)
    layer = "model.language_model.layers.0.self_attn."
    k_rows = model.get_submodule(layer + "k_proj").out_features

    def fake_select(shape, act, candidates, **_kwargs) -> KernelChoice:
        pool = [n for n in candidates if n in names] or list(candidates)
        name = pool[-1] if shape[0] == k_rows and len(pool) > 1 else pool[0]
        return KernelChoice(name, {name: {1: 1.0}})

    monkeypatch.setattr(apply_module, "select_kernel", fake_select)
    plan = quantize_model(model, INT8QuantizationConfig())
    assert {plan.modules[layer + p].kernel for p in ("q_proj", "k_proj", "v_proj")} == {names[0]}
    assert model.get_submodule(layer + "q_proj")._group is not None
