"""Linear layers in the formats a GPU runs (`rules`): built on the CPU from slimvl's own modules, then
moved with their layer. They hold the weight in the format it was stored in (int8, slimvl's int4, a
16-bit float) and compute in what the device's rules allow; every op is plain PyTorch, so they run on
any device (the tests run them on the CPU)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from slimvl.device.rules import INT_MM_MIN_ROWS, DeviceRules
from slimvl.precision import int4_math
from slimvl.precision.float_linear import FloatLinear
from slimvl.precision.int4_modules import Int4Linear
from slimvl.quant import Int8Linear


class DeviceInt8Linear(nn.Module):
    """``y = x @ (q · w_scale)ᵀ + bias``: int8 ``q`` widened per call, or `torch._int_mm` with per-token
    int8 activations for calls of more than 16 rows where the rules say so. Activations are never
    quantized on the widened path (weight-only int8); a SmoothQuant factor is applied to ``x``."""

    def __init__(self, source: Int8Linear, use_int_mm: bool) -> None:
        super().__init__()
        state = source.state_dict()  # unpacks a kernel's packed copy back to `qweight`
        self.in_features, self.out_features = source.in_features, source.out_features
        self.use_int_mm = use_int_mm
        self.register_buffer("qweight", state["qweight"].clone())
        self.register_buffer("w_scale", state["w_scale"].float().clone())
        self.register_buffer("bias", None if state.get("bias") is None else state["bias"].float().clone())
        self.register_buffer(
            "smooth", None if state.get("smooth") is None else state["smooth"].float().clone()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, x.shape[-1]).float()
        if self.smooth is not None:
            rows = rows / self.smooth
        if self.use_int_mm and rows.shape[0] >= INT_MM_MIN_ROWS:
            codes, scale = int4_math.quantize_activations(rows)
            y = torch._int_mm(codes, self.qweight.t()).float() * scale[:, None] * self.w_scale
            y = y if self.bias is None else y + self.bias
        else:
            y = F.linear(rows, self.qweight.float() * self.w_scale[:, None], self.bias)
        return y.reshape(*x.shape[:-1], -1).to(x.dtype)


class DeviceInt4Linear(nn.Module):
    """slimvl's int4 format widened per call: codes re-laid two per byte in natural order (element 2j
    in the low nibble), so that unpacking is two ops on any device."""

    def __init__(self, source: Int4Linear) -> None:
        super().__init__()
        weight = source.weight4
        self.out_features, self.in_features = weight.shape
        codes = int4_math.unpack_codes(weight.codes)
        self.register_buffer("codes", (codes[:, 0::2] | (codes[:, 1::2] << 4)).contiguous())
        self.register_buffer("mult", weight.mult.clone())
        self.register_buffer("row_scale", weight.row_scale.float().clone())
        bias = getattr(source, "bias", None)
        self.register_buffer("bias", None if bias is None else bias.float().clone())

    def widened(self) -> torch.Tensor:
        rows, half = self.codes.shape
        codes = torch.stack((self.codes & 0x0F, self.codes >> 4), dim=-1).reshape(rows, half * 2)
        multipliers = self.mult.float().repeat_interleave(int4_math.GROUP, dim=1)
        return ((codes.float() - 8) * multipliers) * self.row_scale[:, None]  # as `int4_math` rounds

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x.float(), self.widened(), self.bias)
        return y.to(x.dtype)


class DeviceFloatLinear(nn.Module):
    """A float weight kept in its stored dtype, computed in the dtype the rules give it."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, compute: torch.dtype) -> None:
        super().__init__()
        self.compute = compute
        self.out_features, self.in_features = weight.shape
        self.register_buffer("weight", weight.detach().clone())
        self.register_buffer("bias", None if bias is None else bias.detach().float().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x.to(self.compute), self.weight.to(self.compute))
        y = y.to(x.dtype)
        return y if self.bias is None else y + self.bias.to(y.dtype)


def device_linear(module: nn.Module, rules: DeviceRules) -> nn.Module | None:
    """`module` in its device format, or None when it is no linear slimvl knows (moved as it is)."""
    if isinstance(module, Int8Linear):
        return DeviceInt8Linear(module, rules.int8_matmul == "int_mm")
    if isinstance(module, Int4Linear):
        return DeviceInt4Linear(module)
    if isinstance(module, FloatLinear):
        return DeviceFloatLinear(module.weight, module.bias, rules.compute_dtype(module.weight.dtype))
    if type(module) is nn.Linear and module.weight.dtype != torch.float32:
        return DeviceFloatLinear(module.weight, module.bias, rules.compute_dtype(module.weight.dtype))
    return None


def convert_linears(root: nn.Module, rules: DeviceRules) -> None:
    """Replace, in place, every linear under `root` by its device format."""
    for name, child in list(root.named_children()):
        replacement = device_linear(child, rules)
        if replacement is None:
            convert_linears(child, rules)
        else:
            setattr(root, name, replacement)
