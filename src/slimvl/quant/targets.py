"""Which Qwen3-VL linears the INT8 config switches select, and where SmoothQuant factors can be folded."""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import nn

from slimvl.config import INT8QuantizationConfig

_DECODER = r"model\.language_model\.layers\.\d+"
_ATTENTION = re.compile(rf"^{_DECODER}\.self_attn\.[qkvo]_proj$")
_MLP = re.compile(rf"^{_DECODER}\.mlp\.(gate|up|down)_proj$")
_VISION = re.compile(
    r"^model\.visual\.(blocks\.\d+\.(attn\.(qkv|proj)|mlp\.linear_fc[12])"
    r"|merger\.linear_fc[12]|deepstack_merger_list\.\d+\.linear_fc[12])$"
)

# (block pattern, source, linears reading the source's output and nothing else). The source is a norm
# (its weight, and bias if any, scale each output channel) or a linear (its output rows).
_FOLDABLE = (
    (_DECODER, "input_layernorm", ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")),
    (_DECODER, "post_attention_layernorm", ("mlp.gate_proj", "mlp.up_proj")),
    (_DECODER, "mlp.up_proj", ("mlp.down_proj",)),  # down_proj reads silu(gate) · up: linear in up
    (r"model\.visual\.blocks\.\d+", "norm1", ("attn.qkv",)),
    (r"model\.visual\.blocks\.\d+", "norm2", ("mlp.linear_fc1",)),
    (r"model\.visual\.deepstack_merger_list\.\d+", "norm", ("linear_fc1",)),  # post-shuffle norm only
)


def select_linears(model: nn.Module, config: INT8QuantizationConfig) -> dict[str, nn.Linear]:
    """The ``nn.Linear`` modules the switches select: decoder attention q/k/v/o, decoder MLP
    gate/up/down, the vision blocks' attention and MLP and the (DeepStack) mergers."""
    patterns = [
        pattern
        for pattern, on in (
            (_ATTENTION, config.quantize_attention),
            (_MLP, config.quantize_mlp),
            (_VISION, config.quantize_vision),
        )
        if on
    ]
    return {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and any(p.match(name) for p in patterns)
    }


@dataclass(frozen=True)
class SmoothGroup:
    """Linears that read the output of ``source`` and nothing else reads it: SmoothQuant factors for
    their shared input fold into ``source`` exactly (output channel j divided by s_j)."""

    source: str
    linears: tuple[str, ...]


def smooth_groups(model: nn.Module, targets: dict[str, nn.Linear]) -> list[SmoothGroup]:
    """The foldable groups whose linears are all targets, in model order (per block: norms first)."""
    modules = dict(model.named_modules())
    groups = []
    for name, block in modules.items():
        for block_pattern, source, linears in _FOLDABLE:
            if not re.fullmatch(block_pattern, name):
                continue
            if source == "norm" and not getattr(block, "use_postshuffle_norm", False):
                continue  # a pre-shuffle norm has 1/4 of the linear's input width
            names = tuple(f"{name}.{linear}" for linear in linears)
            source_name = f"{name}.{source}"
            if source_name in modules and all(n in targets for n in names):
                groups.append(SmoothGroup(source_name, names))
    return groups


@torch.no_grad()
def fold_smoothing(source: nn.Module, linears: list[nn.Linear], s: torch.Tensor) -> None:
    """Divide ``source``'s output channels by ``s`` and multiply the linears' input columns by it:
    the float function is unchanged, the linears' input is now ``x / s``."""
    if isinstance(source, nn.Linear):
        _scale_(source.weight, 1 / s[:, None])
        if source.bias is not None:
            _scale_(source.bias, 1 / s)
    else:
        _scale_(source.weight, 1 / s)
        if getattr(source, "bias", None) is not None:
            _scale_(source.bias, 1 / s)
    for linear in linears:
        _scale_(linear.weight, s[None, :])


def _scale_(param: torch.Tensor, factor: torch.Tensor) -> None:
    param.copy_((param.float() * factor).to(param.dtype))
