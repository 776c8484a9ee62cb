"""The int4 weight format: 4-bit codes in groups of 32, each group's scale an integer multiple (1..15) of
one fp32 scale per output row.

``W[n, k] ≈ row_scale[n] · mult[n, k // 32] · (u[n, k] − 8)`` with codes ``u`` in [0, 15]. Storage per
weight: 4 bits of code plus 4 bits per 32 weights of multiplier (kept as one byte each here, 0.53 bytes
per weight in all). The integer multipliers are what let a kernel accumulate a whole row in int32 and
scale once at the end (llama.cpp's K-quants use the same two-level idea with 6-bit sub-scales).

Each group's multiplier is chosen by searching the few around its absmax for the least squared weight
error (round to nearest, codes clamped to [−8, 7]), the row scale being the row's absmax / 105 (the group
holding the absmax can then represent it exactly with multiplier 15 and code ±7).

Activations are quantized per row (token) to int8 with scale absmax / 127, as the kernel does; the
integer dot and the float result defined here are what the kernel must reproduce.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

GROUP = 32
MULTIPLIERS = 15
BLOCK = 16  # groups per block of the kernel's layout
SEARCH_WIDTH = 4  # multipliers tried per group
_SEARCH_CHUNK_ELEMENTS = 1 << 22  # weights searched at once (× SEARCH_WIDTH candidates in flight)


@dataclass(frozen=True)
class Int4Weight:
    """A quantized (N, K) weight: ``codes`` uint8 (N, K/2) packed (see `pack_codes`), ``mult`` uint8
    (N, K/32), ``row_scale`` float32 (N,), ``offsets`` int32 (N,): ``128 · Σ_k mult · (u − 8)``, the
    term an activation offset of 128 adds to each row's dot (the kernel stores activations as uint8)."""

    codes: torch.Tensor
    mult: torch.Tensor
    row_scale: torch.Tensor
    offsets: torch.Tensor

    @property
    def shape(self) -> tuple[int, int]:
        return self.codes.shape[0], self.codes.shape[1] * 2


def supports(shape: tuple[int, int]) -> bool:
    """Whether an (N, K) weight can be stored in int4 (K in whole groups)."""
    return shape[1] % GROUP == 0


def quantize_weight(weight: torch.Tensor) -> Int4Weight:
    n, k = weight.shape
    if k % GROUP:
        raise ValueError(f"int4 weight: K={k} is not a multiple of the group size {GROUP}")
    w = weight.detach().float().reshape(n, k // GROUP, GROUP)
    row_scale = w.abs().amax(dim=(1, 2)) / (7 * MULTIPLIERS)
    row_scale = torch.where(row_scale > 0, row_scale, torch.ones_like(row_scale))
    rows = max(1, _SEARCH_CHUNK_ELEMENTS // k)
    mult = torch.cat([_best_multipliers(w[i : i + rows], row_scale[i : i + rows]) for i in range(0, n, rows)])
    step = (row_scale[:, None] * mult.float())[:, :, None]
    codes = (torch.round(w / step).clamp_(-8, 7) + 8).to(torch.uint8).reshape(n, k)
    return Int4Weight(pack_codes(codes), mult, row_scale.float(), _offsets(codes, mult))


def _best_multipliers(w: torch.Tensor, row_scale: torch.Tensor) -> torch.Tensor:
    """Per group, the multiplier with the least squared error among `SEARCH_WIDTH` candidates from one
    below the multiplier that maps the group's absmax to 8, where the error-optimal one lies (the tests
    compare this window with a search of all 15)."""
    low = (w.abs().amax(dim=-1) / (8 * row_scale[:, None])).floor_() - 1  # (n, groups)
    candidates = (low[:, :, None] + torch.arange(SEARCH_WIDTH)).clamp_(1, MULTIPLIERS)  # (n, groups, width)
    step = row_scale[:, None, None, None] * candidates[..., None]
    q = torch.round(w[:, :, None, :] / step).clamp_(-8, 7)
    error = (w[:, :, None, :] - q * step).square_().sum(dim=-1)
    return candidates.gather(-1, error.argmin(dim=-1, keepdim=True)).squeeze(-1).to(torch.uint8)


def _offsets(codes: torch.Tensor, mult: torch.Tensor) -> torch.Tensor:
    n, k = codes.shape
    per_group = (codes.to(torch.int64) - 8).reshape(n, k // GROUP, GROUP).sum(dim=-1)
    return (128 * (per_group * mult.to(torch.int64)).sum(dim=-1)).to(torch.int32)


def pack_codes(codes: torch.Tensor) -> torch.Tensor:
    """(N, K) codes in [0, 15] → (N, K/2) bytes, the kernel's layout: within each group of 32, byte j
    holds element j in its low nibble and element 16 + j in its high nibble; within each block of 16
    groups the 16-byte groups are ordered 0, 8, 1, 9, ..., 7, 15 (groups after the last whole block keep
    their order)."""
    n, k = codes.shape
    halves = codes.reshape(n, k // GROUP, 2, GROUP // 2)
    groups = halves[:, :, 0] | (halves[:, :, 1] << 4)  # (n, G, 16)
    return groups[:, _group_order(k // GROUP)].reshape(n, k // 2)


def unpack_codes(packed: torch.Tensor) -> torch.Tensor:
    n, half = packed.shape
    count = half // (GROUP // 2)
    groups = torch.empty_like(packed.reshape(n, count, GROUP // 2))
    groups[:, _group_order(count)] = packed.reshape(n, count, GROUP // 2)
    return torch.stack((groups & 0x0F, groups >> 4), dim=2).reshape(n, half * 2)


def _group_order(groups: int) -> torch.Tensor:
    """Stored position → group index (see `pack_codes`)."""
    whole = groups // BLOCK * BLOCK
    blocks = torch.arange(0, whole, BLOCK)[:, None]
    within = torch.stack((torch.arange(BLOCK // 2), torch.arange(BLOCK // 2, BLOCK)), dim=1).reshape(-1)
    return torch.cat(((blocks + within).reshape(-1), torch.arange(whole, groups)))


def integer_weight(weight: Int4Weight) -> torch.Tensor:
    """``mult · (u − 8)`` (N, K) as int16: the weight in units of its row scale."""
    codes = unpack_codes(weight.codes).to(torch.int16) - 8
    return codes * weight.mult.to(torch.int16).repeat_interleave(GROUP, dim=1)


def dequantize_weight(weight: Int4Weight, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return (integer_weight(weight).float() * weight.row_scale[:, None]).to(dtype)


def quantize_activations(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(M, K) float → int8 codes (M, K) and per-row scales (M,): ``round(x · (127 / absmax))`` in fp32
    (ties to even), as the kernel computes them."""
    x = x.float()
    absmax = x.abs().amax(dim=1)
    inverse = torch.where(absmax > 0, 127.0 / absmax, torch.zeros_like(absmax))
    codes = torch.round(x * inverse[:, None]).to(torch.int8)
    return codes, absmax / 127.0


def integer_dot(codes: torch.Tensor, weight: Int4Weight) -> torch.Tensor:
    """The exact (M, N) integer dots of int8 activation codes with the weight, as float64."""
    return codes.double() @ integer_weight(weight).double().T


def linear(x: torch.Tensor, weight: Int4Weight, bias: torch.Tensor | None = None) -> torch.Tensor:
    """The format's linear map on (M, K) rows in plain PyTorch: what the kernel computes, exactly up to
    the final fp32 scaling (the kernel's fallback)."""
    codes, x_scale = quantize_activations(x)
    y = (x_scale[:, None] * weight.row_scale[None, :]) * integer_dot(codes, weight).float()
    return y if bias is None else y + bias.float()
