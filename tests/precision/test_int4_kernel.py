"""The int4 extension computes the format's exact integers, and its two GEMM paths (the AVX2 loop and
int8 expansion + at::_int_mm) give the same float outputs; plain PyTorch stands in where it is missing."""

from __future__ import annotations

import pytest
import torch

from slimvl.precision import int4_kernel, int4_math

needs_extension = pytest.mark.skipif(
    int4_kernel.extension() is None, reason="the int4 extension does not build on this machine"
)
SHAPES = [(1, 16, 32), (3, 40, 96), (4, 33, 512), (5, 8, 512 + 64), (9, 64, 2048), (17, 24, 1024)]


@needs_extension
@pytest.mark.parametrize(("m", "n", "k"), SHAPES)
def test_extension_integers_are_exact(m: int, n: int, k: int) -> None:
    gen = torch.Generator().manual_seed(m * n + k)
    q = int4_math.quantize_weight(torch.randn(n, k, generator=gen))
    x = torch.randn(m, k, generator=gen) * 3
    expected = int4_math.integer_dot(int4_math.quantize_activations(x)[0], q)
    assert torch.equal(int4_kernel.integer_dot(x, q).double(), expected)


@needs_extension
@pytest.mark.parametrize(("m", "n", "k"), SHAPES)
def test_both_gemm_paths_match_the_reference(m: int, n: int, k: int) -> None:
    gen = torch.Generator().manual_seed(k)
    q = int4_math.quantize_weight(torch.randn(n, k, generator=gen))
    x, bias = torch.randn(m, k, generator=gen), torch.randn(n, generator=gen)
    ext = int4_kernel.extension()
    loop = ext.linear(x, q.codes, q.mult, q.offsets, q.row_scale, bias)
    expanded = ext.linear_expanded(x, q.codes, q.mult, q.offsets, q.row_scale, bias, 8)
    assert torch.equal(loop, expanded)
    torch.testing.assert_close(loop, int4_math.linear(x, q, bias), rtol=1e-6, atol=1e-6)


def test_the_fallback_is_the_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(int4_kernel, "extension", lambda: None)
    q = int4_math.quantize_weight(torch.randn(8, 64))
    x = torch.randn(2, 64)
    assert int4_kernel.kernel_name() == "python"
    assert torch.equal(int4_kernel.linear(x, q), int4_math.linear(x, q))


def test_output_is_close_to_the_float_linear() -> None:
    gen = torch.Generator().manual_seed(3)
    w, x = torch.randn(64, 512, generator=gen), torch.randn(4, 512, generator=gen)
    y = int4_kernel.linear(x, int4_math.quantize_weight(w))
    exact = x @ w.T
    sqnr_db = 10 * torch.log10(exact.square().sum() / (y - exact).square().sum())
    assert sqnr_db > 18
