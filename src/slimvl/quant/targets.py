"""Which Qwen3-VL linears the INT8 config switches select."""

from __future__ import annotations

import re

from torch import nn

from slimvl.config import INT8QuantizationConfig

DECODER = r"model\.language_model\.layers\.\d+"
_ATTENTION = re.compile(rf"^{DECODER}\.self_attn\.[qkvo]_proj$")
_MLP = re.compile(rf"^{DECODER}\.mlp\.(gate|up|down)_proj$")
_VISION = re.compile(
    r"^model\.visual\.(blocks\.\d+\.(attn\.(qkv|proj)|mlp\.linear_fc[12])"
    r"|merger\.linear_fc[12]|deepstack_merger_list\.\d+\.linear_fc[12])$"
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
