"""MLP activations computed in place, where the activation's input is a temporary nobody else reads.

transformers' Qwen3-VL MLPs apply their activation to a projection's fresh output
(`fc2(act(fc1(x)))` in the vision blocks and mergers, `down(act(gate(x)) * up(x))` in the decoder), so
the activation may overwrite it: the same numbers, one activation-sized buffer fewer. At 2B the vision
MLP's buffers are 784 x 4096 floats (12.8 MB); each fresh one adds to the heap's high-water mark and to
the request's peak RSS. With autograd recording, the original out-of-place activation runs.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from transformers.activations import GELUTanh, SiLUActivation
from transformers.models.qwen3_vl.modeling_qwen3_vl import (
    Qwen3VLTextMLP,
    Qwen3VLVisionMLP,
    Qwen3VLVisionPatchMerger,
)

# The MLPs whose activation input is a projection's own output (read by nothing else).
_MLPS_WITH_TEMPORARY_INPUT = (Qwen3VLVisionMLP, Qwen3VLVisionPatchMerger, Qwen3VLTextMLP)


def _gelu_tanh_inplace(module: nn.Module) -> Callable[[torch.Tensor], torch.Tensor] | None:
    act = getattr(module, "act", None)  # GELUTanh may run a Python formula instead: leave that one
    if isinstance(act, functools.partial) and act.func is F.gelu and act.keywords == {"approximate": "tanh"}:
        return lambda x: torch.ops.aten.gelu_(x, approximate="tanh")
    return None


def _gelu_inplace(module: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    approximate = module.approximate
    return lambda x: torch.ops.aten.gelu_(x, approximate=approximate)


def _silu_inplace(module: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda x: F.silu(x, inplace=True)


# activation type -> its in-place function (None: this instance has none)
INPLACE_ACTIVATIONS: dict[type, Callable[[nn.Module], Callable[[torch.Tensor], torch.Tensor] | None]] = {
    GELUTanh: _gelu_tanh_inplace,
    nn.GELU: _gelu_inplace,
    SiLUActivation: _silu_inplace,
    nn.SiLU: _silu_inplace,
}


class InplaceActivation(nn.Module):
    """Runs `inplace(x)` on `x`, or the `original` module where autograd may need `x`."""

    def __init__(self, original: nn.Module, inplace: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.original = original
        self._inplace = inplace

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            return self.original(x)
        return self._inplace(x)


def use_inplace_activations(model: nn.Module) -> int:
    """Swap the activation of every Qwen3-VL MLP in `model` for its in-place form; returns how many."""
    swapped = 0
    for module in model.modules():
        if not isinstance(module, _MLPS_WITH_TEMPORARY_INPUT):
            continue
        make = INPLACE_ACTIVATIONS.get(type(module.act_fn))
        inplace = make(module.act_fn) if make is not None else None
        if inplace is not None:
            module.act_fn = InplaceActivation(module.act_fn, inplace)
            swapped += 1
    return swapped
