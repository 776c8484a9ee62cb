"""Each kernel against the exact integer reference and against fp32; overflow inputs; selection."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from slimvl.quant import kernels as kernels_module
from slimvl.quant import select as select_module
from slimvl.quant.int8_math import int8_matmul_reference, quantize_weight_per_channel, sqnr_db, static_qparams
from slimvl.quant.kernels import KERNELS, ActQuant, LinearKernel, computes, per_token, usable_kernels
from slimvl.quant.linear import Int8Linear
from slimvl.quant.select import select_kernel

INTEGER_KERNELS = ("fbgemm_dynamic", "onednn_w8a8")  # int32 accumulation: must be exact
STEP = 2.0**-5  # activation scale of the grid inputs: x / STEP is an exact integer code
# (kernel, how its activations come): W8A8 kernels with dynamic and static scales; weight-only kernels
# with the float grid inputs themselves (exact in bf16 too: at most 8 significant bits)
KERNEL_MODES = [
    (n, m)
    for n, k in KERNELS.items()
    for m in ("weight_only", "dynamic", "static")
    if (k.weight_only if m == "weight_only" else computes(k, ActQuant(127)))
]


def require(name: str) -> LinearKernel:
    kernel = KERNELS[name]
    if not kernel.available():
        pytest.skip(f"{name} is not available on this machine")
    return kernel


def assert_matches_reference(name: str, y: torch.Tensor, ref: torch.Tensor, w_scale: torch.Tensor) -> None:
    """Integer kernels: every output within half a quantization step (STEP · w_scale[n]) of the int64
    reference, which an accumulation off by even one unit would violate. Float kernels: dequant is
    fp32 arithmetic on exactly dequantized operands (1e-5 of the largest output); int8pack_bf16
    rounds scales and outputs to bf16 (8 mantissa bits: 2^-7 of the row's largest output)."""
    err = (y.float() - ref).abs()
    if name in INTEGER_KERNELS:
        assert torch.all(err < 0.5 * STEP * w_scale), (
            f"{name}: {float((err / (STEP * w_scale)).max())} steps off"
        )
    elif name == "dequant":
        assert float(err.max()) <= 1e-5 * float(ref.abs().max())
    else:
        assert torch.all(err <= 2.0**-7 * ref.abs().amax(dim=1, keepdim=True))


def grid_case(zp: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inputs on the quantization grid, codes 0 and 127 present, so per-tensor dynamic quantization
    (ours and fbgemm's) recovers exactly these codes with scale STEP and zero point ``zp``."""
    gen = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, 128, (5, 256), generator=gen)
    codes[0, :2] = torch.tensor([0, 127])
    wq = torch.randint(-127, 128, (48, 256), dtype=torch.int8, generator=gen)
    w_scale = torch.rand(48, generator=gen) * 1e-2 + 1e-3
    return (codes - zp).float() * STEP, codes, wq, w_scale


def grid_act(mode: str, zero_point: int) -> ActQuant | None:
    """How ``mode`` quantizes grid inputs (scale STEP): static with the grid's own scale."""
    return {"weight_only": None, "dynamic": ActQuant(127), "static": ActQuant(127, STEP, zero_point)}[mode]


@pytest.mark.parametrize(("name", "mode"), KERNEL_MODES)
def test_kernel_matches_the_integer_reference(name: str, mode: str) -> None:
    kernel = require(name)
    x, codes, wq, w_scale = grid_case(zp=37)
    act = grid_act(mode, 37)
    y = kernel.run(kernel.prepare(wq, w_scale), x, act)
    assert_matches_reference(name, y, int8_matmul_reference(codes, STEP, 37, wq, w_scale), w_scale)


@pytest.mark.parametrize(("name", "mode"), KERNEL_MODES)
def test_reduce_range_is_exact_on_inputs_that_overflow_vpmaddubsw(name: str, mode: str) -> None:
    """Activations all at the max code and weights all ±127: a u8×s8 pair sum of 2·255·127 would
    saturate int16 on AVX2 without VNNI; the 7-bit range keeps it at 2·127·127 (see test_quant_math)."""
    kernel = require(name)
    wq = torch.full((4, 256), 127, dtype=torch.int8)
    wq[1] = -127
    wq[2, 1::2] = -127
    wq[3] = torch.where(torch.rand(256) < 0.5, -127, 127).to(torch.int8)
    w_scale = torch.tensor([0.01, 0.02, 0.03, 0.04])
    x = torch.full((3, 256), 127 * STEP)
    act = grid_act(mode, 0)
    y = kernel.run(kernel.prepare(wq, w_scale), x, act)
    ref = int8_matmul_reference(torch.full((3, 256), 127), STEP, 0, wq, w_scale)
    assert_matches_reference(name, y, ref, w_scale)


@pytest.mark.parametrize("aten", [True, False], ids=["aten_quantizer", "int8_math"])
@pytest.mark.parametrize("mode", ["dynamic", "static"])
def test_activation_codes_are_the_grid_codes(monkeypatch: pytest.MonkeyPatch, aten: bool, mode: str) -> None:
    if not aten:
        monkeypatch.setattr(kernels_module, "_aten_quantizer_available", lambda: False)
    elif not kernels_module._aten_quantizer_available():
        pytest.skip("this PyTorch has no quantizer of its own")
    x, codes, _, _ = grid_case(zp=37)
    xq, scale, zero_point = grid_act(mode, 37).quantize(x)
    assert xq.dtype == torch.uint8 and torch.equal(xq.long(), codes)
    assert (scale, zero_point) == (STEP, 37)


@pytest.mark.parametrize("mode", ["dynamic", "static"])
def test_w8a8_kernels_multiply_the_same_codes(mode: str) -> None:
    """Whichever W8A8 kernel a layer gets (a timing race decides), it computes the same outputs up to
    fp32 rounding. Rows scaled to absmax 1, as per-token dynamic quantization feeds them, put the zero
    point on a rounding tie (63.5), where two quantization rules would part: fbgemm and the others
    differed there by 1.7% of the output before they shared one quantizer."""
    names = [n for n, k in KERNELS.items() if computes(k, ActQuant(127)) and k.available()]
    if len(names) < 2:
        pytest.skip("one W8A8 kernel only")
    gen = torch.Generator().manual_seed(3)
    q, w_scale = quantize_weight_per_channel(torch.randn(96, 192, generator=gen) * 0.05)
    states = {n: KERNELS[n].prepare(q, w_scale) for n in names}
    for rows in (1, 7, 64):
        x = torch.randn(rows, 192, generator=gen)
        x[:, :3] *= 20
        x = x / x.abs().amax(dim=1, keepdim=True)
        act = ActQuant(127) if mode == "dynamic" else ActQuant(127, 1.4 / 127, 64)
        outs = {n: KERNELS[n].run(states[n], x, act) for n in names}
        first = outs[names[0]]
        for name, y in outs.items():
            assert float((y - first).abs().max()) <= 1e-5 * float(first.abs().max()), (name, rows)


_AVX2_SCRIPT = """
import torch
from slimvl.quant.int8_math import int8_matmul_reference
from slimvl.quant.kernels import KERNELS, ActQuant
kernel = KERNELS["onednn_w8a8"]
wq = torch.full((4, 256), 127, dtype=torch.int8)
wq[1::2] = -127
w_scale = torch.full((4,), 0.01)
state = kernel.prepare(wq, w_scale)
for qmax in (127, 255):
    y = kernel.run(state, torch.full((3, 256), qmax * 2.0**-5), ActQuant(qmax))
    ref = int8_matmul_reference(torch.full((3, 256), qmax), 2.0**-5, 0, wq, w_scale)
    print(qmax, float(((y - ref).abs() / (2.0**-5 * w_scale)).max()))
"""


def test_onednn_on_avx2_saturates_at_full_range_and_is_exact_with_reduce_range() -> None:
    """oneDNN capped at AVX2 (the target's ISA; fbgemm cannot be capped) in a fresh process."""
    require("onednn_w8a8")
    if "avx2" not in Path("/proc/cpuinfo").read_text():
        pytest.skip("needs an AVX2 CPU")
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}
    out = subprocess.run(
        [sys.executable, "-c", _AVX2_SCRIPT], env=env, capture_output=True, text=True, timeout=120, check=True
    )
    steps_off = {int(q): float(e) for q, e in (line.split() for line in out.stdout.splitlines())}
    assert steps_off[127] < 0.5  # exact integer accumulation
    assert steps_off[255] > 1000  # the naive full range really saturates here: why reduce_range exists


@pytest.mark.parametrize(("name", "mode"), KERNEL_MODES)
def test_kernel_sqnr_against_fp32(name: str, mode: str) -> None:
    kernel = require(name)
    gen = torch.Generator().manual_seed(1)
    w, x = torch.randn(256, 512, generator=gen) * 0.05, torch.randn(16, 512, generator=gen)
    acts = {
        "weight_only": None,
        "dynamic": ActQuant(127),
        "static": ActQuant(127, *static_qparams(float(x.min()), float(x.max()))),
    }
    q, scale = quantize_weight_per_channel(w)
    y = kernel.run(kernel.prepare(q, scale), x, acts[mode])
    assert sqnr_db(F.linear(x, w), y) >= 30


@pytest.mark.parametrize("name", [n for n, k in KERNELS.items() if k.copies_weight])
def test_packed_weight_unpacks_exactly(name: str) -> None:
    kernel = require(name)
    q, scale = quantize_weight_per_channel(torch.randn(40, 64))
    assert torch.equal(kernel.unpack(kernel.prepare(q, scale)), q)


def test_selection_falls_back_to_dequant(monkeypatch: pytest.MonkeyPatch) -> None:
    """As on a PyTorch without the legacy fbgemm ops (or oneDNN, or int8pack)."""
    for name in ("fbgemm_dynamic", "onednn_w8a8", "int8pack_bf16"):
        monkeypatch.setitem(KERNELS, name, dataclasses.replace(KERNELS[name], available=lambda: False))
    for act in (ActQuant(127), None):
        assert usable_kernels((64, 128), act) == ["dequant"]
        assert select_kernel((64, 128), act, batch_sizes=(1,), repeats=1).name == "dequant"
    linear = torch.nn.Linear(128, 64)
    module = Int8Linear.from_linear(linear, "dynamic", select_kernel((64, 128), ActQuant(127)).name)
    x = torch.randn(4, 128)
    assert sqnr_db(linear(x).detach(), module(x)) >= 30


def test_selection_measures_every_usable_kernel_and_caches() -> None:
    choice = select_kernel((64, 128), ActQuant(127), batch_sizes=(1, 8), repeats=2)
    assert set(choice.timings_ms) == set(usable_kernels((64, 128), ActQuant(127)))
    assert all(1 in t and set(t) <= {1, 8} and min(t.values()) > 0 for t in choice.timings_ms.values())
    assert choice.timings_ms[choice.name][1] <= 1.05 * min(t[1] for t in choice.timings_ms.values())
    assert select_kernel((64, 128), ActQuant(127), batch_sizes=(1, 8), repeats=2) is choice
    weight_only = select_kernel((64, 128), None, batch_sizes=(1,), repeats=2)
    assert weight_only.timings_ms and all(KERNELS[n].weight_only for n in weight_only.timings_ms)


def test_selection_rule_first_batch_size_decides_next_breaks_ties(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = {
        "fbgemm_dynamic": (1.00, 9.0),
        "onednn_w8a8": (1.04, 3.0),
        "int8pack_bf16": (0.5, 0.5),  # fastest everywhere, but never a W8A8 layer's kernel
        "dequant": (3.0, 2.0),
    }
    monkeypatch.setattr(select_module, "time_kernel", lambda k, s, x, a, r: fake[k.name][x.shape[0] > 1])
    monkeypatch.setattr(select_module, "_CACHE", {})
    names = list(fake)
    for name in names:
        stub = dataclasses.replace(KERNELS[name], available=lambda: True, prepare=lambda q, s: None)
        monkeypatch.setitem(KERNELS, name, stub)
    assert select_kernel((32, 64), ActQuant(127), names, batch_sizes=(1, 256)).name == "onednn_w8a8"
    assert select_kernel((32, 64), ActQuant(127), names, batch_sizes=(256,)).name == "dequant"
    assert select_kernel((32, 64), None, names, batch_sizes=(256,)).name == "int8pack_bf16"
    assert select_kernel((32, 64), None, names, batch_sizes=(256,), float_bits=32).name == "dequant"


def test_one_row_is_timed_through_weight_copies_that_do_not_fit_a_cache(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Decoding reads each layer's weight from memory: a one-row timing cycles through distinct copies
    (64 MB of them, at most 32 copies); more rows are timed on one."""
    passed: dict[tuple[tuple[int, int], int], list] = {}

    def fake_time(kernel, states, x, act, repeats):
        passed[(tuple(shape), x.shape[0])] = states
        return 1.0

    monkeypatch.setattr(select_module, "time_kernel", fake_time)
    monkeypatch.setattr(select_module, "_CACHE", {})
    for shape in ((2048, 2048), (64, 64)):
        select_kernel(shape, None, ["dequant"], batch_sizes=(1,))
        select_kernel(shape, None, ["dequant"], batch_sizes=(256,))
    big = passed[((2048, 2048), 1)]
    assert len(big) == 16 and len({q.data_ptr() for q, _ in big}) == 16
    assert len(passed[((64, 64), 1)]) == 32
    assert len(passed[((2048, 2048), 256)]) == len(passed[((64, 64), 256)]) == 1


def test_int8pack_gets_aligned_activations() -> None:
    kernel = require("int8pack_bf16")
    q, scale = quantize_weight_per_channel(torch.randn(64, 64))
    x = torch.randn(3 * 64 + 8).bfloat16()[1 : 1 + 3 * 64].view(3, 64)  # 2 bytes off alignment
    ref = kernel.run(kernel.prepare(q, scale), x.clone(), None)
    assert torch.equal(kernel.run(kernel.prepare(q, scale), x, None), ref)


def test_int8pack_is_never_offered_a_shape_it_would_crash_on() -> None:
    assert "int8pack_bf16" not in usable_kernels((8, 31), None)
    with pytest.raises(ValueError, match="does not support"):
        Int8Linear(31, 8, bias=False, mode="weight_only", kernel="int8pack_bf16")


def test_per_token_scales_each_row_by_its_absmax() -> None:
    rows = torch.tensor(
        [[-3.0, 1.0, 2.0], [0.5, 4.0, -1.0], [-0.0, 0.0, 0.0], [-2.0, -7.0, -1.0]], dtype=torch.float32
    )
    seen: list[torch.Tensor] = []

    def run(x: torch.Tensor) -> torch.Tensor:
        seen.append(x)
        return x * 10

    out = per_token(run, rows)
    absmax = rows.abs().amax(dim=1, keepdim=True).clamp(min=1e-30)
    assert torch.equal(seen[0], rows / absmax)
    assert torch.equal(out, (rows / absmax * 10) * absmax)
    assert seen[0].abs().amax(dim=1).tolist() == [1.0, 1.0, 0.0, 1.0]
    one = rows[:1]
    per_token(run, one)
    assert seen[-1] is one  # one row: passed as is
