"""Int8Linear, Int8Embedding and TiedInt8LMHead against the fp32 modules they replace."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from slimvl.models.weights import weight_bytes
from slimvl.quant import embedding as embedding_module
from slimvl.quant.embedding import Int8Embedding, TiedInt8LMHead
from slimvl.quant.int8_math import sqnr_db
from slimvl.quant.kernels import KERNELS, ActQuant, usable_kernels
from slimvl.quant.linear import Int8Linear

SHAPE = (256, 512)  # (out, in)
W8A8 = usable_kernels(SHAPE, ActQuant(127))
WEIGHT_ONLY = usable_kernels(SHAPE, None)
CASES = (
    [("dynamic", k) for k in W8A8] + [("static", k) for k in W8A8] + [("weight_only", k) for k in WEIGHT_ONLY]
)


@pytest.fixture(scope="module")
def linear() -> nn.Linear:
    torch.manual_seed(0)
    layer = nn.Linear(SHAPE[1], SHAPE[0])
    nn.init.normal_(layer.weight, std=0.05)
    return layer.requires_grad_(False)


def make(linear: nn.Linear, mode: str, kernel: str, x: torch.Tensor) -> Int8Linear:
    act_range = (float(x.min()), float(x.max())) if mode == "static" else None
    return Int8Linear.from_linear(linear, mode, kernel, act_range=act_range)


@pytest.mark.parametrize(("mode", "kernel"), CASES)
def test_int8_linear_close_to_fp32(linear: nn.Linear, mode: str, kernel: str) -> None:
    x = torch.randn(2, 7, SHAPE[1])
    module = make(linear, mode, kernel, x)
    y = module(x)
    assert y.shape == (2, 7, SHAPE[0]) and y.dtype == torch.float32
    assert sqnr_db(linear(x), y) >= 30
    one = module(x[:1, :1])  # decode-shaped call
    assert one.shape == (1, 1, SHAPE[0]) and sqnr_db(linear(x[:1, :1]), one) >= 30


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_output_keeps_the_input_dtype(linear: nn.Linear, dtype: torch.dtype) -> None:
    x = torch.randn(3, SHAPE[1]).to(dtype)
    x[1] = 0  # an all-zero token
    y = Int8Linear.from_linear(linear, "dynamic", W8A8[0])(x)
    assert y.dtype == dtype and sqnr_db(linear(x.float()), y.float()) >= 25


@pytest.mark.parametrize("kernel", W8A8)
def test_dynamic_scales_are_per_token(linear: nn.Linear, kernel: str) -> None:
    """One token 1000× larger than the rest (an attention-sink-like outlier) costs the others nothing."""
    x = torch.randn(8, SHAPE[1])
    x[0] *= 1000
    module = Int8Linear.from_linear(linear, "dynamic", kernel)
    ref = linear(x)
    y = module(x)
    assert min(sqnr_db(ref[i], y[i]) for i in range(8)) >= 30
    per_tensor = module._kernel.run(module._state, x, module._act) + module.bias
    assert min(sqnr_db(ref[i], per_tensor[i]) for i in range(1, 8)) < 20  # what per-tensor would give


@pytest.mark.parametrize("kernel", W8A8)
def test_static_saturates_outside_the_calibrated_range(linear: nn.Linear, kernel: str) -> None:
    calib = torch.randn(16, SHAPE[1])
    module = make(linear, "static", kernel, calib)
    lo = float(-module.act_zero_point * module.act_scale)
    hi = float((127 - module.act_zero_point) * module.act_scale)
    x = torch.randn(5, SHAPE[1]) * 3
    assert x.min() < lo and x.max() > hi
    assert torch.equal(module(x), module(x.clamp(lo, hi)))


@pytest.mark.parametrize(("mode", "kernel"), CASES)
def test_state_dict_round_trip(linear: nn.Linear, mode: str, kernel: str) -> None:
    x = torch.randn(4, SHAPE[1])
    module = make(linear, mode, kernel, x)
    q = module.qweight.clone()
    module.prepare()
    module.prepare()  # idempotent
    assert (module.qweight is None) == KERNELS[kernel].copies_weight  # packed copy replaces the plain one
    state = module.state_dict()
    assert torch.equal(state["qweight"], q)
    empty = Int8Linear(SHAPE[1], SHAPE[0], bias=True, mode=mode, kernel=kernel, device="meta")
    empty.load_state_dict(state, assign=True)
    assert torch.equal(empty(x), module(x))
    module.load_state_dict(state)  # also into a module whose plain weight was released
    assert torch.equal(module(x), empty(x))


@pytest.mark.parametrize("kernel", W8A8)
def test_prepared_module_can_be_copied(linear: nn.Linear, kernel: str) -> None:
    module = Int8Linear.from_linear(linear, "dynamic", kernel)
    x = torch.randn(3, SHAPE[1])
    y = module(x)
    copied = copy.deepcopy(module)
    assert torch.equal(copied(x), y) and torch.equal(module(x), y)


@pytest.mark.parametrize("kernel", WEIGHT_ONLY)
def test_weights_loaded_at_odd_addresses_are_realigned(linear: nn.Linear, kernel: str) -> None:
    """safetensors hands out tensors at any file offset; int8pack's AVX-512 loop crashed on them."""
    module = Int8Linear.from_linear(linear, "weight_only", kernel)
    x = torch.randn(2, SHAPE[1])
    y = module(x)
    buffer = torch.empty(module.qweight.numel() + 64, dtype=torch.int8)
    start = (1 - buffer.data_ptr()) % 64
    odd = buffer[start : start + module.qweight.numel()].view_as(module.qweight).copy_(module.qweight)
    assert odd.data_ptr() % 64 == 1
    module.load_state_dict({**module.state_dict(), "qweight": odd}, assign=True)
    assert torch.equal(module(x), y) and module.qweight.data_ptr() % 64 == 0


def test_runtime_smoothing_divides_the_input(linear: nn.Linear) -> None:
    s = torch.rand(SHAPE[1]) + 0.5
    x = torch.randn(4, SHAPE[1])
    module = Int8Linear.from_linear(linear, "dynamic", W8A8[0], smooth=s)
    assert sqnr_db(linear(x), module(x)) >= 30


def test_mode_and_kernel_validation(linear: nn.Linear) -> None:
    with pytest.raises(ValueError, match="mode"):
        Int8Linear.from_linear(linear, "int4", "dequant")
    with pytest.raises(ValueError, match="kernel"):
        Int8Linear.from_linear(linear, "dynamic", "_int_mm")
    with pytest.raises(ValueError, match="act_range"):
        Int8Linear.from_linear(linear, "static", "dequant")
    if "fbgemm_dynamic" in KERNELS:
        with pytest.raises(ValueError, match="weight-only"):
            Int8Linear.from_linear(linear, "weight_only", "fbgemm_dynamic")
    with pytest.raises(ValueError, match="int8pack_bf16.*16 bits: not usable for W8A8"):
        Int8Linear.from_linear(linear, "dynamic", "int8pack_bf16")


@pytest.fixture(scope="module")
def embedding() -> nn.Embedding:
    torch.manual_seed(0)
    return nn.Embedding(1000, 64).requires_grad_(False)


def test_int8_embedding_lookup(embedding: nn.Embedding) -> None:
    table = Int8Embedding.from_embedding(embedding)
    ids = torch.randint(0, 1000, (3, 17))
    out = table(ids)
    assert out.shape == (3, 17, 64) and out.dtype == torch.float32
    assert sqnr_db(embedding(ids), out) >= 30
    bf16 = Int8Embedding.from_embedding(nn.Embedding(10, 64).to(torch.bfloat16))
    assert bf16(torch.tensor([1, 2])).dtype == torch.bfloat16


@pytest.mark.parametrize("kernel", usable_kernels((1000, 64), None, allow_copies=False))
def test_tied_head_reads_the_same_table(embedding: nn.Embedding, kernel: str) -> None:
    table = Int8Embedding.from_embedding(embedding)
    head = TiedInt8LMHead(table, kernel)
    x = torch.randn(2, 5, 64)
    logits = head(x)
    assert logits.shape == (2, 5, 1000) and sqnr_db(x @ embedding.weight.T, logits) >= 30
    parent = nn.ModuleDict({"embed": table, "head": head})
    state = parent.state_dict()
    assert state["head.table.qweight"].data_ptr() == state["embed.qweight"].data_ptr()  # bytes exist once
    table.qweight = torch.zeros_like(table.qweight)  # a reloaded table is picked up
    assert not head(x).any()


COPYING = [n for n in usable_kernels((1000, 64), ActQuant(127)) if KERNELS[n].copies_weight]


def test_tied_head_mode_matches_its_kernel(embedding: nn.Embedding) -> None:
    """In place (weight-only) or its own packed copy with quantized activations (dynamic), nothing else."""
    table = Int8Embedding.from_embedding(embedding)
    for name in COPYING:
        with pytest.raises(ValueError, match="in place|weight-only"):
            TiedInt8LMHead(table, name)
    with pytest.raises(ValueError, match="a tied head reads the table in place"):
        TiedInt8LMHead(table, "dequant", mode="dynamic")
    with pytest.raises(ValueError, match="mode: got 'static'"):
        TiedInt8LMHead(table, "dequant", mode="static")


@pytest.mark.parametrize("kernel", COPYING)
def test_dynamic_head_packs_in_chunks_like_one_linear(
    embedding: nn.Embedding, kernel: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chunked packing is exact: each output column depends only on its own row of the table."""
    monkeypatch.setattr(embedding_module, "PACK_CHUNK_ROWS", 300)  # 4 chunks, the last one short
    table = Int8Embedding.from_embedding(embedding)
    head = TiedInt8LMHead(table, kernel, mode="dynamic")
    linear = Int8Linear(64, 1000, bias=False, mode="dynamic", kernel=kernel)
    linear.qweight, linear.w_scale = table.qweight.clone(), table.scale.clone()
    x = torch.randn(2, 5, 64)
    assert torch.equal(head(x), linear(x)) and len(head._states) == 4
    assert sqnr_db(x @ embedding.weight.T, head(x)) >= 30
    assert head.packed_tensors() == [("packed_table", 64000, 64000, "int8")]


def test_a_table_left_in_its_file_serves_the_same_rows(embedding: nn.Embedding, tmp_path: Path) -> None:
    table = Int8Embedding.from_embedding(embedding)
    expected = table.qweight.clone()
    file = tmp_path / "table.bin"
    file.write_bytes(b"header" + expected.numpy().tobytes())
    mapped = torch.from_numpy(np.memmap(file, dtype=np.int8, mode="c", offset=6, shape=(1000, 64)))
    ids = torch.tensor([[3, 999, 0]])
    before = table(ids)
    table.leave_in_file(mapped, str(file), 6)
    assert torch.equal(table(ids), before) and torch.equal(table.rows(990, 1000), expected[990:])
    assert weight_bytes(table) == table.scale.nbytes  # not held in memory
    assert torch.equal(table.state_dict()["qweight"], expected)  # but saved all the same
