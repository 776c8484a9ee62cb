"""Candidate int8 linear kernels behind one small interface, chosen by measurement on the machine at hand.

Every kernel computes ``y = x @ (q · scale)ᵀ`` for an int8 weight ``q`` (N, K) with per-output-channel
scales (N,). Given an ``ActQuant`` the activations are uint8 per tensor, whatever the kernel:

- ``fbgemm_dynamic``: ``torch.ops.quantized`` (fbgemm), u8×s8 with int32 accumulation; dynamic scales via
  ``linear_dynamic``, static ones via ``linear_with_input_q_dq_qweight_dq_output_fp32``. Part of the
  deprecated ``torch.ao.quantization`` stack, hence optional.
- ``onednn_w8a8``: ``torch.ops.onednn.qlinear_pointwise``, the maintained W8A8 path; activations are
  quantized here (``int8_math``) at every call.
- ``int8pack_bf16``: ``torch._weight_int8pack_mm``, weight-only with bf16 activations (fp32 activations
  take a scalar loop there, so they are always cast).
- ``dequant``: dequantize the weight (in row chunks) and ``F.linear``; always available.

The two weight-only kernels quantize and dequantize the activations first when given an ``ActQuant``,
so a module computes the same W8A8 function whichever kernel the machine picked, up to rounding:
``int8pack_bf16`` rounds the dequantized activations and its output to bf16 (8 significant bits), which
changes a few of builtin:tiny's 1000 test answers when it wins some layers' timing (0.3 points seen).
``torch._int_mm`` is deliberately absent: on a CPU without VNNI it is a naive scalar loop. ``select.py``
measures and picks.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from slimvl.quant.int8_math import affine_qparams, dequantize_affine, dequantize_per_channel, quantize_affine

_DEQUANT_CHUNK_ELEMENTS = 1 << 22  # rows dequantized at once: at most 16 MB of fp32


@dataclass(frozen=True)
class ActQuant:
    """Per-tensor uint8 quantization of a kernel's input, codes ``[0, qmax]``.

    ``scale`` None: dynamic, from the input's min and max at each call; else static (inputs outside
    the calibrated range saturate).
    """

    qmax: int
    scale: float | None = None
    zero_point: int = 0

    @property
    def kind(self) -> str:
        return "dynamic" if self.scale is None else "static"

    def qparams(self, x: torch.Tensor) -> tuple[float, int]:
        if self.scale is not None:
            return self.scale, self.zero_point
        lo, hi = x.aminmax()
        scale, zero_point = affine_qparams(lo, hi, self.qmax)
        return float(scale), int(zero_point)

    def fake_quantize(self, x: torch.Tensor) -> torch.Tensor:
        scale, zero_point = self.qparams(x)
        return dequantize_affine(quantize_affine(x.float(), scale, zero_point, self.qmax), scale, zero_point)


@dataclass(frozen=True)
class LinearKernel:
    """``prepare(q, scale) -> state`` once per layer, then ``run(state, x (M, K), act) -> y (M, N)``.

    ``weight_only``: the GEMM takes float activations (and ``act`` None is allowed); ``copies_weight``:
    the state holds its own packed copy of ``q``, which ``unpack`` gives back, so the plain one can go;
    ``supports(N, K)``: the shapes it handles. Kernels that read ``q`` in place want it ``aligned``.
    """

    name: str
    weight_only: bool
    copies_weight: bool
    available: Callable[[], bool]
    prepare: Callable[[torch.Tensor, torch.Tensor], Any]
    run: Callable[[Any, torch.Tensor, ActQuant | None], torch.Tensor]
    unpack: Callable[[Any], torch.Tensor] | None = None
    supports: Callable[[int, int], bool] = lambda n, k: True


def per_token(run: Callable[[torch.Tensor], torch.Tensor], rows: torch.Tensor) -> torch.Tensor:
    """``run`` (a per-tensor dynamic W8A8 kernel call) with per-token activation scales: each row is
    divided by its absmax and its output row multiplied back (a linear map commutes with row scaling),
    so every token uses the full code range. One row (decode) needs no rescaling. The output, which
    ``run`` allocated, is rescaled in place: at 784 vision tokens a copy of it costs more than the GEMM's
    own activation quantization. The row absmax is max(max, -min): two reductions and no |x| copy."""
    if rows.shape[0] == 1:
        return run(rows)
    absmax = torch.maximum(rows.amax(dim=1, keepdim=True), rows.amin(dim=1, keepdim=True).neg_())
    absmax = absmax.float().clamp_(min=1e-30)
    return run(rows / absmax).float().mul_(absmax)  # .float() copies only a bf16 output


def _per_channel_qtensor(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    zero_points = torch.zeros(q.shape[0], dtype=torch.int64)
    with warnings.catch_warnings():  # quantized tensor creation is deprecated; fbgemm needs one here
        warnings.filterwarnings("ignore", message=".*quantized tensor creation functions.*")
        return torch._make_per_channel_quantized_tensor(q.contiguous(), scale.double(), zero_points, 0)


def _fbgemm_prepare(q: torch.Tensor, scale: torch.Tensor) -> Any:
    return torch.ops.quantized.linear_prepack(_per_channel_qtensor(q, scale), None)


def _fbgemm_run(state: Any, x: torch.Tensor, act: ActQuant | None) -> torch.Tensor:
    if act is None:
        raise ValueError("fbgemm_dynamic needs quantized activations (an ActQuant)")
    x = x.float()
    if act.scale is None:
        return torch.ops.quantized.linear_dynamic(x, state, act.qmax == 127)
    # fbgemm quantizes to the full [0, 255] range: clamp first so no code exceeds qmax.
    lo, hi = -act.zero_point * act.scale, (act.qmax - act.zero_point) * act.scale
    x = x.clamp(lo, hi)
    return torch.ops.quantized.linear_with_input_q_dq_qweight_dq_output_fp32(
        x, act.scale, act.zero_point, state
    )


def _fbgemm_unpack(state: Any) -> torch.Tensor:
    return torch.ops.quantized.linear_unpack(state)[0].int_repr()


def _onednn_prepare(q: torch.Tensor, scale: torch.Tensor) -> Any:
    packed = torch.ops.onednn.qlinear_prepack(q.contiguous(), None)
    return packed, scale.float().contiguous(), torch.zeros(q.shape[0], dtype=torch.int64)


def _onednn_run(state: Any, x: torch.Tensor, act: ActQuant | None) -> torch.Tensor:
    if act is None:
        raise ValueError("onednn_w8a8 needs quantized activations (an ActQuant)")
    packed, w_scale, w_zero_point = state
    x = x.float()
    scale, zero_point = act.qparams(x)
    xq = quantize_affine(x, scale, zero_point, act.qmax)
    return torch.ops.onednn.qlinear_pointwise(
        xq, scale, zero_point, packed, w_scale, w_zero_point, None, 1.0, 0, torch.float32, "none", [], ""
    )


def _onednn_unpack(state: Any) -> torch.Tensor:
    return state[0].to_dense().t().contiguous()


def aligned(t: torch.Tensor) -> torch.Tensor:
    """``t`` if it is contiguous and 64-byte aligned, else such a copy (PyTorch allocates at 64 bytes;
    safetensors hands out tensors at any offset of the file)."""
    return (
        t if t.is_contiguous() and t.data_ptr() % 64 == 0 else t.clone(memory_format=torch.contiguous_format)
    )


def _int8pack_prepare(q: torch.Tensor, scale: torch.Tensor) -> Any:
    """The AVX-512 loop of ``_weight_int8pack_mm`` crashes on operands not 16-byte (weight) or
    32-byte (activations) aligned (torch 2.13): both are passed 64-byte aligned."""
    return aligned(q), scale.to(torch.bfloat16)


def _int8pack_run(state: Any, x: torch.Tensor, act: ActQuant | None) -> torch.Tensor:
    q, scale = state
    if act is not None:
        x = act.fake_quantize(x)
    return torch._weight_int8pack_mm(aligned(x.to(torch.bfloat16)), q, scale)


def _int8pack_supports(n: int, k: int) -> bool:
    """Its vectorized CPU loop reads K in blocks with no tail: other K crash the process (torch 2.13)."""
    return k % 32 == 0


def _dequant_prepare(q: torch.Tensor, scale: torch.Tensor) -> Any:
    return q, scale.float()


def _dequant_run(state: Any, x: torch.Tensor, act: ActQuant | None) -> torch.Tensor:
    q, scale = state
    if act is not None:
        x = act.fake_quantize(x)
    rows = max(1, _DEQUANT_CHUNK_ELEMENTS // q.shape[1])
    parts = [
        F.linear(x, dequantize_per_channel(q[i : i + rows], scale[i : i + rows], x.dtype))
        for i in range(0, q.shape[0], rows)
    ]
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)


def _probe(kernel_name: str, act: ActQuant | None) -> bool:
    """Run the kernel once on a tiny layer: the op may exist yet fail on this build or CPU."""
    kernel = KERNELS[kernel_name]
    q = torch.ones(4, 32, dtype=torch.int8)
    try:
        y = kernel.run(kernel.prepare(q, torch.ones(4)), torch.ones(1, 32), act)
    except (RuntimeError, NotImplementedError) as exc:
        warnings.warn(f"int8 kernel {kernel_name} unavailable: {str(exc).splitlines()[0]}", stacklevel=2)
        return False
    return y.shape == (1, 4)


@functools.cache
def _fbgemm_available() -> bool:
    ops = (
        "linear_prepack",
        "linear_dynamic",
        "linear_unpack",
        "linear_with_input_q_dq_qweight_dq_output_fp32",
    )
    if not all(hasattr(torch.ops.quantized, op) for op in ops):
        return False
    if torch.backends.quantized.engine not in ("fbgemm", "x86"):
        return False
    return _probe("fbgemm_dynamic", ActQuant(127)) and _probe("fbgemm_dynamic", ActQuant(127, 0.1, 3))


@functools.cache
def _onednn_available() -> bool:
    ops = ("qlinear_prepack", "qlinear_pointwise")
    if not torch.backends.mkldnn.is_available() or not all(hasattr(torch.ops.onednn, op) for op in ops):
        return False
    return _probe("onednn_w8a8", ActQuant(127))


@functools.cache
def _int8pack_available() -> bool:
    return hasattr(torch, "_weight_int8pack_mm") and _probe("int8pack_bf16", None)


KERNELS: dict[str, LinearKernel] = {
    k.name: k
    for k in (
        LinearKernel(
            "fbgemm_dynamic", False, True, _fbgemm_available, _fbgemm_prepare, _fbgemm_run, _fbgemm_unpack
        ),
        LinearKernel(
            "onednn_w8a8", False, True, _onednn_available, _onednn_prepare, _onednn_run, _onednn_unpack
        ),
        LinearKernel(
            "int8pack_bf16",
            True,
            False,
            _int8pack_available,
            _int8pack_prepare,
            _int8pack_run,
            supports=_int8pack_supports,
        ),
        LinearKernel("dequant", True, False, lambda: True, _dequant_prepare, _dequant_run),
    )
}
FALLBACK = "dequant"


def usable_kernels(shape: tuple[int, int], act: ActQuant | None, allow_copies: bool = True) -> list[str]:
    """Available kernels for an (N, K) layer run with ``act`` (None: weight-only, float activations)."""
    return [
        name
        for name, k in KERNELS.items()
        if (act is not None or k.weight_only)
        and (allow_copies or not k.copies_weight)
        and k.supports(*shape)
        and k.available()
    ]
