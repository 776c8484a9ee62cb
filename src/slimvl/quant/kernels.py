"""Candidate int8 linear kernels behind one small interface, chosen by measurement on the machine at hand.

Every kernel computes ``y = x @ (q · scale)ᵀ`` for an int8 weight ``q`` (N, K) with per-output-channel
scales (N,). Given an ``ActQuant`` the activations are uint8 per tensor with the same codes whatever
the kernel (``ActQuant.quantize``):

- ``fbgemm_dynamic``: ``torch.ops.quantized`` (fbgemm), u8×s8 with int32 accumulation; dynamic scales via
  ``linear_dynamic``, static ones via ``linear_with_input_q_dq_qweight_dq_output_fp32``. Part of the
  deprecated ``torch.ao.quantization`` stack, hence optional.
- ``onednn_w8a8``: ``torch.ops.onednn.qlinear_pointwise``, the maintained W8A8 path; activations are
  quantized here at every call.
- ``int8pack_bf16``: ``torch._weight_int8pack_mm``, weight-only with bf16 activations (fp32 activations
  take a scalar loop there, so they are always cast).
- ``dequant``: dequantize the weight (in row chunks) and ``F.linear``; always available.

``dequant`` quantizes and dequantizes the activations first when given an ``ActQuant``. A layer only
gets a kernel that computes its numerics (``usable_kernels``): a W8A8 layer the 8-bit kernels or
``dequant`` (fp32 on the dequantized codes: the same function up to fp32 rounding), never
``int8pack_bf16``, which rounds the activations, the weight scales and its output to bf16 (8 significant
bits): when it won some layers' timing race, builtin:tiny's int8 accuracy moved by 0.3 points of its
1000 test answers from one optimization to the next. A weight-only layer gets the kernels whose
activations keep at least the recipe's ``activation_bits`` (16: bf16 or fp32; 32: fp32 only).
``torch._int_mm`` is deliberately absent: on a CPU without VNNI it is a naive scalar loop. ``select.py``
measures and picks.
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from collections.abc import Callable, Iterator
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

    @property
    def bounds(self) -> tuple[float, float]:
        """The static range: the inputs that code 0 and code ``qmax`` stand for."""
        return -self.zero_point * self.scale, (self.qmax - self.zero_point) * self.scale

    def quantize(self, x: torch.Tensor) -> tuple[torch.Tensor, float, int]:
        """``x``'s uint8 codes, scale and zero point: computed by PyTorch's own quantizer where this build
        has one, which gives the very codes fbgemm's GEMMs compute internally (its rounding of ties is its
        own), so whichever W8A8 kernel a layer gets, it multiplies the same integers; else by
        ``int8_math``."""
        x = x.float()
        if _aten_quantizer_available():
            with _quantized_tensors():  # fbgemm quantizes this way
                if self.scale is None:
                    xq = torch.quantize_per_tensor_dynamic(x, torch.quint8, self.qmax == 127)
                else:
                    xq = torch.quantize_per_tensor(
                        x.clamp(*self.bounds), self.scale, self.zero_point, torch.quint8
                    )
            return xq.int_repr(), xq.q_scale(), xq.q_zero_point()
        if self.scale is None:
            scale, zero_point = affine_qparams(*x.aminmax(), self.qmax)
            scale, zero_point = float(scale), int(zero_point)
        else:
            scale, zero_point = self.scale, self.zero_point
        return quantize_affine(x, scale, zero_point, self.qmax), scale, zero_point

    def fake_quantize(self, x: torch.Tensor) -> torch.Tensor:
        return dequantize_affine(*self.quantize(x))


@contextlib.contextmanager
def _quantized_tensors() -> Iterator[None]:
    """Create quantized tensors without PyTorch's deprecation warning (the stack fbgemm needs)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*quantized tensor creation functions.*")
        yield


@functools.cache
def _aten_quantizer_available() -> bool:
    """Whether ``torch.quantize_per_tensor(_dynamic)`` exist and run on this build (deprecated)."""
    if not hasattr(torch, "quantize_per_tensor_dynamic") or not hasattr(torch, "quantize_per_tensor"):
        return False
    try:
        with _quantized_tensors():
            torch.quantize_per_tensor_dynamic(torch.ones(1, 4), torch.quint8, True).int_repr()
    except (RuntimeError, NotImplementedError):
        return False
    return True


@dataclass(frozen=True)
class LinearKernel:
    """``prepare(q, scale) -> state`` once per layer, then ``run(state, x (M, K), act) -> y (M, N)``.

    ``weight_only``: the GEMM takes float activations (and ``act`` None is allowed); ``activation_bits``:
    the precision the GEMM reads activations at (8: int8 codes, 16: bf16, 32: fp32); ``copies_weight``:
    the state holds its own packed copy of ``q``, which ``unpack`` gives back, so the plain one can go;
    ``supports(N, K)``: the shapes it handles. Kernels that read ``q`` in place want it ``aligned``.
    """

    name: str
    weight_only: bool
    activation_bits: int
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
    with _quantized_tensors():  # fbgemm needs one here
        return torch._make_per_channel_quantized_tensor(q.contiguous(), scale.double(), zero_points, 0)


def _fbgemm_prepare(q: torch.Tensor, scale: torch.Tensor) -> Any:
    return torch.ops.quantized.linear_prepack(_per_channel_qtensor(q, scale), None)


def _fbgemm_run(state: Any, x: torch.Tensor, act: ActQuant | None) -> torch.Tensor:
    if act is None:
        raise ValueError("fbgemm_dynamic needs quantized activations (an ActQuant)")
    x = x.float()
    if act.scale is None:
        return torch.ops.quantized.linear_dynamic(x, state, act.qmax == 127)
    x = x.clamp(*act.bounds)  # fbgemm quantizes to the full [0, 255] range: no code may exceed qmax
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
    xq, scale, zero_point = act.quantize(x)
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
    if act is not None:
        raise ValueError("int8pack_bf16 computes weight-only layers: it takes no ActQuant")
    q, scale = state
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
            "fbgemm_dynamic", False, 8, True, _fbgemm_available, _fbgemm_prepare, _fbgemm_run, _fbgemm_unpack
        ),
        LinearKernel(
            "onednn_w8a8", False, 8, True, _onednn_available, _onednn_prepare, _onednn_run, _onednn_unpack
        ),
        LinearKernel(
            "int8pack_bf16",
            True,
            16,
            False,
            _int8pack_available,
            _int8pack_prepare,
            _int8pack_run,
            supports=_int8pack_supports,
        ),
        LinearKernel("dequant", True, 32, False, lambda: True, _dequant_prepare, _dequant_run),
    )
}
FALLBACK = "dequant"


def usable_kernels(
    shape: tuple[int, int], act: ActQuant | None, allow_copies: bool = True, float_bits: int = 16
) -> list[str]:
    """Available kernels for an (N, K) layer run with ``act`` (None: weight-only, float activations kept
    to at least ``float_bits`` bits) that compute its numerics (see the module docstring)."""
    return [
        name
        for name, k in KERNELS.items()
        if computes(k, act, float_bits)
        and (allow_copies or not k.copies_weight)
        and k.supports(*shape)
        and k.available()
    ]


def computes(kernel: LinearKernel, act: ActQuant | None, float_bits: int = 16) -> bool:
    """Whether ``kernel`` computes a W8A8 layer (``act`` given) exactly up to fp32 rounding, or a
    weight-only one with activations of at least ``float_bits`` bits."""
    if act is not None:
        return kernel.activation_bits in (8, 32)
    return kernel.weight_only and kernel.activation_bits >= float_bits
