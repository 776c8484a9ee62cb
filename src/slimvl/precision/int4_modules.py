"""Modules that hold int4 weights (`int4_math`): a linear, an embedding table, and the tied ``lm_head``
that reads the same table."""

from __future__ import annotations

import functools

import torch
from torch import nn

from slimvl.precision import int4_kernel, int4_math
from slimvl.precision.int4_math import GROUP, Int4Weight
from slimvl.precision.timing import best_ms

PREFILL_KERNELS = ("avx2", "int_mm", "python")
EXPANDED_CHUNK_ROWS = 512  # weight rows expanded to int8 at once for `int_mm` (1-3 MB: cache-sized)
_INT_MM_MIN_ROWS = 16  # fewer rows (decode) always take the AVX2 loop, which reads the codes once


class _Int4Storage(nn.Module):
    """The four buffers of one `Int4Weight`, under fixed names (what an optimized directory stores)."""

    def __init__(self, rows: int, cols: int, device: torch.device | str | None = None) -> None:
        super().__init__()
        if cols % GROUP:
            raise ValueError(f"int4: the input size {cols} is not a multiple of {GROUP}")
        self.register_buffer("codes", torch.empty(rows, cols // 2, dtype=torch.uint8, device=device))
        self.register_buffer("mult", torch.empty(rows, cols // GROUP, dtype=torch.uint8, device=device))
        self.register_buffer("row_scale", torch.empty(rows, device=device))
        self.register_buffer("offsets", torch.empty(rows, dtype=torch.int32, device=device))

    def set_weight(self, weight: Int4Weight) -> None:
        self.codes, self.mult, self.row_scale, self.offsets = (
            weight.codes,
            weight.mult,
            weight.row_scale,
            weight.offsets,
        )

    @property
    def weight4(self) -> Int4Weight:
        return Int4Weight(self.codes, self.mult, self.row_scale, self.offsets)


def _run(x: torch.Tensor, weight: Int4Weight, bias: torch.Tensor | None, prefill_kernel: str) -> torch.Tensor:
    rows = x.reshape(-1, x.shape[-1]).float()
    ext = int4_kernel.extension()
    if ext is None or prefill_kernel == "python":
        y = int4_math.linear(rows, weight, bias)
    elif prefill_kernel == "int_mm" and rows.shape[0] >= _INT_MM_MIN_ROWS:
        y = ext.linear_expanded(
            rows, weight.codes, weight.mult, weight.offsets, weight.row_scale, bias, EXPANDED_CHUNK_ROWS
        )
    else:
        y = ext.linear(rows, weight.codes, weight.mult, weight.offsets, weight.row_scale, bias)
    return y.reshape(*x.shape[:-1], y.shape[-1]).to(x.dtype)


class Int4Linear(_Int4Storage):
    """``y = x @ Wᵀ + bias`` with ``W`` in int4 (`int4_math`); ``prefill_kernel`` is how calls of 16 rows
    or more run (`choose_prefill_kernel`); fewer rows always take the AVX2 loop (or plain PyTorch where
    the extension is missing)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        bias: bool,
        prefill_kernel: str,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__(out_features, in_features, device)
        if prefill_kernel not in PREFILL_KERNELS:
            raise ValueError(f"prefill_kernel: got {prefill_kernel!r}, allowed: {', '.join(PREFILL_KERNELS)}")
        self.in_features, self.out_features, self.prefill_kernel = in_features, out_features, prefill_kernel
        self.bias = (
            nn.Parameter(torch.empty(out_features, device=device), requires_grad=False) if bias else None
        )

    @classmethod
    def from_linear(cls, linear: nn.Linear, prefill_kernel: str) -> Int4Linear:
        module = cls(
            linear.in_features,
            linear.out_features,
            bias=linear.bias is not None,
            prefill_kernel=prefill_kernel,
            device="meta",
        )
        module.set_weight(int4_math.quantize_weight(linear.weight))
        if linear.bias is not None:
            module.bias = nn.Parameter(linear.bias.detach().float().clone(), requires_grad=False)
        return module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _run(x, self.weight4, self.bias, self.prefill_kernel)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int4, prefill={self.prefill_kernel}"


class Int4Embedding(_Int4Storage):
    """Token lookup from an int4 table; only the looked-up rows are dequantized."""

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__(num_embeddings, embedding_dim, device)
        self.num_embeddings, self.embedding_dim, self.dtype = num_embeddings, embedding_dim, dtype

    @classmethod
    def from_embedding(cls, embedding: nn.Embedding) -> Int4Embedding:
        weight = embedding.weight
        module = cls(embedding.num_embeddings, embedding.embedding_dim, dtype=weight.dtype, device="meta")
        module.set_weight(int4_math.quantize_weight(weight))
        return module

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        flat = ids.reshape(-1)
        rows = Int4Weight(self.codes[flat], self.mult[flat], self.row_scale[flat], self.offsets[flat])
        return int4_math.dequantize_weight(rows, self.dtype).reshape(*ids.shape, self.embedding_dim)


class TiedInt4LMHead(nn.Module):
    """``logits = x @ tableᵀ`` over the SAME int4 table as the token embedding (registered here too, as
    transformers does for tied weights)."""

    def __init__(self, table: Int4Embedding, prefill_kernel: str) -> None:
        super().__init__()
        self.table, self.prefill_kernel = table, prefill_kernel
        self.in_features, self.out_features = table.embedding_dim, table.num_embeddings

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _run(x, self.table.weight4, None, self.prefill_kernel)


@functools.cache
def choose_prefill_kernel(shape: tuple[int, int], rows: int = 128) -> tuple[str, dict[str, float]]:
    """The faster way to run ``rows`` rows through an (N, K) int4 weight on this machine, and both
    timings (ms, best of 3 after a warm-up): the AVX2 loop or int8 expansion + ``at::_int_mm``, which
    oneDNN runs fast only where the CPU has VNNI. ``python`` where the extension is missing."""
    ext = int4_kernel.extension()
    if ext is None:
        return "python", {}
    n, k = shape
    weight = Int4Weight(
        int4_math.pack_codes(torch.randint(0, 16, (n, k), dtype=torch.uint8)),
        torch.randint(1, 16, (n, k // GROUP), dtype=torch.uint8),
        torch.rand(n),
        torch.zeros(n, dtype=torch.int32),
    )
    x = torch.randn(rows, k)
    timings = {name: best_ms(lambda name=name: _run(x, weight, None, name)) for name in ("avx2", "int_mm")}
    return min(timings, key=timings.get), timings
