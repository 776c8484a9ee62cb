"""The pure math of int8 quantization: weights, embeddings, activations, SmoothQuant factors, and the
exact integer reference every kernel is tested against.

Weights are symmetric int8 in [-127, 127] with one fp32 scale per output channel (row). Activations are
asymmetric uint8 in [0, qmax] with a scale and a zero point, the operand format of u8×s8 CPU kernels.
"""

from __future__ import annotations

import torch

WEIGHT_QMAX = 127


def activation_qmax(reduce_range: bool) -> int:
    """Largest uint8 activation code: 127 with ``reduce_range`` (7 bits), 255 without.

    AVX2 without VNNI multiplies u8×s8 with ``vpmaddubsw``, which adds pairs of products into a
    saturating int16: 2·255·127 = 64770 > 32767 overflows, 2·127·127 = 32258 does not.
    """
    return 127 if reduce_range else 255


def quantize_weight_per_channel(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 per output channel: ``q = round(w / s)``, ``s = max|w_row| / 127`` (N,), fp32.

    An all-zero row gets scale 1 (its codes are all 0), so no scale is ever 0.
    """
    w = w.detach().float()
    absmax = w.abs().amax(dim=1)
    scale = torch.where(absmax > 0, absmax / WEIGHT_QMAX, torch.ones_like(absmax))
    q = torch.round(w / scale[:, None]).clamp_(-WEIGHT_QMAX, WEIGHT_QMAX).to(torch.int8)
    return q, scale


def quantize_embedding_per_row(table: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """An embedding table (V, D) quantized per row: the same math as per output channel of a linear."""
    return quantize_weight_per_channel(table)


def dequantize_per_channel(
    q: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    return q.to(dtype) * scale.to(dtype)[:, None]


def affine_qparams(lo: torch.Tensor, hi: torch.Tensor, qmax: int) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 (scale, zero_point) covering ``[min(lo, 0), max(hi, 0)]`` with codes ``[0, qmax]``.

    The range always contains 0 so that 0 is exactly representable (zero_point is an integer code);
    an empty range gets scale 1.
    """
    lo = lo.float().clamp(max=0)
    hi = hi.float().clamp(min=0)
    width = hi - lo
    scale = torch.where(width > 0, width / qmax, torch.ones_like(width))
    zero_point = torch.round(-lo / scale).clamp_(0, qmax).to(torch.int64)
    return scale, zero_point


def quantize_affine(
    x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, qmax: int
) -> torch.Tensor:
    """``clamp(round(x / scale) + zero_point, 0, qmax)`` as uint8 (values outside the range saturate)."""
    return (torch.round(x / scale) + zero_point).clamp_(0, qmax).to(torch.uint8)


def dequantize_affine(q: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor) -> torch.Tensor:
    return (q.float() - zero_point) * scale


def quantize_activation_per_token(
    x: torch.Tensor, reduce_range: bool = True
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Dynamic per-token (per row of ``x`` (M, K)) uint8: codes (M, K), scale (M, 1), zero point (M, 1)."""
    qmax = activation_qmax(reduce_range)
    lo, hi = x.float().aminmax(dim=-1, keepdim=True)
    scale, zero_point = affine_qparams(lo, hi, qmax)
    return quantize_affine(x.float(), scale, zero_point, qmax), scale, zero_point


def quantize_activation_per_tensor(
    x: torch.Tensor, reduce_range: bool = True
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Dynamic per-tensor uint8: one (scale, zero point) from the min and max of all of ``x``."""
    qmax = activation_qmax(reduce_range)
    lo, hi = x.float().aminmax()
    scale, zero_point = affine_qparams(lo, hi, qmax)
    return quantize_affine(x.float(), scale, zero_point, qmax), scale, zero_point


def static_qparams(lo: float, hi: float, reduce_range: bool = True) -> tuple[float, int]:
    """Per-tensor (scale, zero point) for a calibrated range ``[lo, hi]``; inputs outside it saturate."""
    scale, zero_point = affine_qparams(torch.tensor(lo), torch.tensor(hi), activation_qmax(reduce_range))
    return float(scale), int(zero_point)


def smooth_scales(act_absmax: torch.Tensor, weight: torch.Tensor, alpha: float) -> torch.Tensor:
    """SmoothQuant factors ``s_j = max|X_j|^α / max|W_j|^(1−α)`` per input channel j (K,).

    The linear then computes ``(X / s) @ (W · s)ᵀ``: outlier channels of X move into W. ``weight`` is
    (N, K), the rows of every linear that reads X stacked. A channel never seen active or with an
    all-zero weight column gets s = 1 (nothing to migrate), so s is always positive and finite.
    """
    a = act_absmax.float()
    w = weight.detach().float().abs().amax(dim=0)
    usable = (a > 0) & (w > 0)
    s = a.clamp(min=1e-12).pow(alpha) / w.clamp(min=1e-12).pow(1 - alpha)
    return torch.where(usable & torch.isfinite(s) & (s > 0), s, torch.ones_like(s))


def int8_matmul_accumulate(
    xq: torch.Tensor, x_zero_point: torch.Tensor | int, wq: torch.Tensor
) -> torch.Tensor:
    """Exact ``Σ_k (xq[m, k] − zp) · wq[n, k]`` in int64 (M, N): what an int32 accumulator must hold."""
    return (xq.to(torch.int64) - torch.as_tensor(x_zero_point, dtype=torch.int64)) @ wq.to(torch.int64).T


def int8_matmul_reference(
    xq: torch.Tensor,
    x_scale: torch.Tensor | float,
    x_zero_point: torch.Tensor | int,
    wq: torch.Tensor,
    w_scale: torch.Tensor,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """The W8A8 linear computed exactly: integer accumulation, then scales in float64, rounded to fp32.

    ``x_scale``/``x_zero_point`` are scalars (per tensor) or (M, 1) (per token); ``w_scale`` is (N,).
    """
    acc = int8_matmul_accumulate(xq, x_zero_point, wq).double()
    y = acc * torch.as_tensor(x_scale, dtype=torch.float64) * w_scale.double()
    if bias is not None:
        y = y + bias.double()
    return y.float()


def sqnr_db(reference: torch.Tensor, approx: torch.Tensor) -> float:
    """Signal-to-quantization-noise ratio in dB: ``10 log10(Σ ref² / Σ (ref − approx)²)``."""
    ref = reference.double()
    noise = (ref - approx.double()).pow(2).sum()
    if noise == 0:
        return float("inf")
    return float(10 * torch.log10(ref.pow(2).sum() / noise))
