"""SmoothQuant outlier migration on Qwen3-VL: factors per linear, folded into the producer where exact."""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import nn

from slimvl.quant.calibrate import ActStats
from slimvl.quant.int8_math import smooth_scales
from slimvl.quant.targets import DECODER

# (block pattern, source, linears reading the source's output and nothing else). The source is a norm
# (its weight, and bias if any, scale each output channel) or a linear (its output rows).
_FOLDABLE = (
    (DECODER, "input_layernorm", ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")),
    (DECODER, "post_attention_layernorm", ("mlp.gate_proj", "mlp.up_proj")),
    (DECODER, "mlp.up_proj", ("mlp.down_proj",)),  # down_proj reads silu(gate) · up: linear in up
    (r"model\.visual\.blocks\.\d+", "norm1", ("attn.qkv",)),
    (r"model\.visual\.blocks\.\d+", "norm2", ("mlp.linear_fc1",)),
    (r"model\.visual\.deepstack_merger_list\.\d+", "norm", ("linear_fc1",)),  # post-shuffle norm only
)


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


def migrate_outliers(
    model: nn.Module, targets: dict[str, nn.Linear], stats: dict[str, ActStats], alpha: float
) -> dict[str, tuple[torch.Tensor, str]]:
    """SmoothQuant over ``targets``: {name: (factors s, "folded" | "runtime")}.

    Foldable groups (``smooth_groups``) get one s from their shared input and their stacked weights,
    folded into the model here at no run-time cost; every other linear gets its own s, which its
    ``Int8Linear`` divides its input by at run time.
    """
    out = {}
    for group in smooth_groups(model, targets):
        linears = [targets[n] for n in group.linears]
        weight = torch.cat([lin.weight.detach().float() for lin in linears])
        s = smooth_scales(stats[group.linears[0]].channel_absmax, weight, alpha)
        fold_smoothing(model.get_submodule(group.source), linears, s)
        out.update({n: (s, "folded") for n in group.linears})
    for name, linear in targets.items():
        if name not in out:
            out[name] = (smooth_scales(stats[name].channel_absmax, linear.weight, alpha), "runtime")
    return out
