"""``Int8Linear``: a drop-in ``nn.Linear`` with int8 per-output-channel weights and a selected kernel."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from slimvl.quant.int8_math import activation_qmax, quantize_weight_per_channel, static_qparams
from slimvl.quant.kernels import KERNELS, ActQuant, LinearKernel, aligned, computes, per_token

MODES = ("dynamic", "static", "weight_only")


def check_kernel(kernel: str, shape: tuple[int, int], weight_only: bool) -> LinearKernel:
    """The kernel named ``kernel`` if it can serve an (N, K) layer in this mode, else ValueError."""
    if kernel not in KERNELS:
        raise ValueError(f"kernel: got {kernel!r}, allowed: {', '.join(KERNELS)}")
    found = KERNELS[kernel]
    if weight_only and not found.weight_only:
        raise ValueError(f"kernel {kernel!r} quantizes activations: not usable for weight-only layers")
    if not weight_only and not computes(found, ActQuant(127)):
        raise ValueError(
            f"kernel {kernel!r} rounds activations to {found.activation_bits} bits: not usable for W8A8 layers"
        )
    if not found.supports(*shape):
        raise ValueError(f"kernel {kernel!r} does not support an (N, K) = {shape} layer")
    return found


class Int8Linear(nn.Module):
    """``y = x @ (q · w_scale)ᵀ + bias`` with int8 ``qweight`` (N, K) and fp32 ``w_scale`` (N,).

    Activation ``mode``:

    - ``"dynamic"``: per-token scales. The W8A8 kernels quantize per tensor, so when the call has
      several rows each row is first divided by its absmax and the output rows multiplied back (a
      linear map commutes with row scaling): every token then uses the full code range, as with
      per-token symmetric scales. One row (decode) needs no rescaling.
    - ``"static"``: one calibrated per-tensor range (``act_scale``, ``act_zero_point``); inputs
      outside it saturate. fbgemm runs it as a true int8 GEMM with that scale; onednn quantizes with
      it then runs the int8 GEMM; ``dequant`` quantizes→dequantizes the input with it (same
      numbers) and then computes in fp32.
    - ``"weight_only"``: float activations (bf16 in ``int8pack_bf16``, never given a W8A8 layer).

    ``smooth`` (K,), if present: SmoothQuant factors not folded elsewhere; ``x`` is divided by them
    here, the weight was multiplied by them before quantization. Kernels that keep their own packed
    copy (``copies_weight``) get ``qweight`` released after packing; ``state_dict`` unpacks it back.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        bias: bool,
        mode: str,
        kernel: str,
        smooth: bool = False,
        reduce_range: bool = True,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode: got {mode!r}, allowed: {', '.join(MODES)}")
        check_kernel(kernel, (out_features, in_features), weight_only=mode == "weight_only")
        self.in_features, self.out_features = in_features, out_features
        self.mode, self.kernel, self.reduce_range = mode, kernel, reduce_range
        self.register_buffer(
            "qweight", torch.empty(out_features, in_features, dtype=torch.int8, device=device)
        )
        self.register_buffer("w_scale", torch.empty(out_features, device=device))
        self.register_buffer("bias", torch.empty(out_features, device=device) if bias else None)
        self.register_buffer("smooth", torch.empty(in_features, device=device) if smooth else None)
        if mode == "static":
            self.register_buffer("act_scale", torch.empty((), device=device))
            self.register_buffer("act_zero_point", torch.empty((), dtype=torch.int64, device=device))
        self._kernel = KERNELS[kernel]
        self._state: Any = None
        self._act: ActQuant | None = None
        self._group: Any = None  # a `fused.SharedInputGroup` computing this layer with others

    @classmethod
    def from_linear(
        cls,
        linear: nn.Linear,
        mode: str,
        kernel: str,
        smooth: torch.Tensor | None = None,
        act_range: tuple[float, float] | None = None,
        reduce_range: bool = True,
    ) -> Int8Linear:
        """Quantize ``linear``; ``act_range`` (static mode only) is the calibrated (min, max) of its
        input as this module sees it, i.e. after division by ``smooth``."""
        if (mode == "static") != (act_range is not None):
            raise ValueError("act_range: required for mode 'static' and only for it")
        module = cls(
            linear.in_features,
            linear.out_features,
            bias=linear.bias is not None,
            mode=mode,
            kernel=kernel,
            smooth=smooth is not None,
            reduce_range=reduce_range,
            device="meta",
        )
        weight = linear.weight.detach().float()
        if smooth is not None:
            module.smooth = smooth.detach().float().clone()
            weight = weight * module.smooth
        module.qweight, module.w_scale = quantize_weight_per_channel(weight)
        if linear.bias is not None:
            module.bias = linear.bias.detach().float().clone()
        if act_range is not None:
            scale, zero_point = static_qparams(*act_range, reduce_range=reduce_range)
            module.act_scale = torch.tensor(scale, dtype=torch.float32)
            module.act_zero_point = torch.tensor(zero_point, dtype=torch.int64)
        return module

    def prepare(self) -> None:
        """Pack the weight for the kernel (done by the first forward otherwise); idempotent. A member of a
        shared-input group has nothing of its own to pack."""
        if self._state is not None or self._group is not None:
            return
        if not self._kernel.available():
            raise RuntimeError(f"int8 kernel {self.kernel!r} is not available on this machine")
        if not self._kernel.copies_weight:
            self.qweight = aligned(self.qweight)  # read in place: realign once here, not per kernel call
        self._state = self._kernel.prepare(self.qweight, self.w_scale)
        if self.mode == "weight_only":
            self._act = None
        elif self.mode == "dynamic":
            self._act = ActQuant(activation_qmax(self.reduce_range))
        else:
            qmax = activation_qmax(self.reduce_range)
            self._act = ActQuant(qmax, float(self.act_scale), int(self.act_zero_point))
        if self._kernel.copies_weight:
            self._buffers["qweight"] = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._group is not None:
            return self._group.output(self, x)
        if self._state is None:
            self.prepare()
        rows = x.reshape(-1, self.in_features)
        if self.smooth is not None:
            rows = rows / self.smooth
        if self.mode == "dynamic":
            y = per_token(lambda r: self._kernel.run(self._state, r, self._act), rows)
        else:
            y = self._kernel.run(self._state, rows, self._act)
        if self.bias is not None:  # the kernels return a fresh output: add in place where dtypes agree
            y = y.add_(self.bias) if y.dtype == self.bias.dtype else y + self.bias
        return y.reshape(*x.shape[:-1], self.out_features).to(x.dtype)

    def __getstate__(self) -> dict[str, Any]:
        """Copies and pickles carry the plain int8 weight, not the kernel state (oneDNN's packed
        tensor cannot be copied); they pack again on first use."""
        state = dict(self.__dict__)
        if self._state is not None or self._group is not None:
            state["_buffers"] = {**self._buffers, "qweight": self.state_dict()["qweight"]}
            state["_state"] = state["_group"] = None
        return state

    def packed_tensors(self) -> list[tuple[str, int, int, str]]:
        """The int8 weight a kernel holds packed (released from `qweight`): (name, numel, bytes, dtype)."""
        if self.qweight is not None:
            return []
        n = self.out_features * self.in_features
        return [("qweight", n, n, "int8")]

    def own_int8_weight(self) -> torch.Tensor:
        """This module's own int8 weight (N, K): the plain one, or unpacked from the kernel's copy once
        `qweight` was released (a group member's weight lives in its group: `weight_rows`)."""
        return self.qweight if self.qweight is not None else self._kernel.unpack(self._state)

    def _save_to_state_dict(self, destination: dict, prefix: str, keep_vars: bool) -> None:
        super()._save_to_state_dict(destination, prefix, keep_vars)
        if self._group is not None:
            destination[prefix + "qweight"] = self._group.weight_rows(self)
        elif self.qweight is None:
            destination[prefix + "qweight"] = self.own_int8_weight()

    def _load_from_state_dict(self, state_dict: dict, prefix: str, local_metadata: dict, *args: Any) -> None:
        key = prefix + "qweight"
        if self._group is not None:
            self._group.dissolve()
        if self.qweight is None and key in state_dict:  # released after packing: make a slot to load into
            assign = local_metadata.get("assign_to_params_buffers", False)
            self._buffers["qweight"] = torch.empty_like(state_dict[key], device="meta" if assign else None)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, *args)
        self._state = None

    def extra_repr(self) -> str:
        extras = ", smooth=True" if self.smooth is not None else ""
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
            f"mode={self.mode}, kernel={self.kernel}{extras}"
        )
