"""Structured pruning of MLP channels: whole intermediate neurons leave the decoder's and the vision
encoder's MLPs, so their matrices really shrink (fewer bytes to read per token, fewer FLOPs per token).
(Attention heads: `slimvl.prune.heads`; whole layers: `slimvl.prune.layer_removal`.)

A channel j of an MLP is scored like Wanda-sp / FLAP: the norm of its column of the output projection
times the L2 norm of its activation over the calibration tokens (the output projection's input j);
with `magnitude`, the column norm alone. Each MLP keeps `kept_width(width, ratio)` channels, its
highest scored, in their original order.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

import torch
from torch import nn

# MLP class name -> (the linears that produce its channels, the linear that reads them)
MLP_LINEARS: dict[str, tuple[tuple[str, ...], str]] = {
    "Qwen3VLTextMLP": (("gate_proj", "up_proj"), "down_proj"),
    "Qwen3VLVisionMLP": (("linear_fc1",), "linear_fc2"),
}


def prunable_modules(
    model: nn.Module, class_names: Collection[str], protected: tuple[str, ...]
) -> tuple[dict[str, nn.Module], list[str]]:
    """The modules of `class_names` that may be shrunk, and the names of those a `protected` entry names."""
    return split_protected(
        ((name, m) for name, m in model.named_modules() if type(m).__name__ in class_names), protected
    )


def split_protected(
    modules: Iterable[tuple[str, nn.Module]], protected: tuple[str, ...]
) -> tuple[dict[str, nn.Module], list[str]]:
    """`modules` by name, but those whose name contains a `protected` entry, whose names come second."""
    found, kept = {}, []
    for name, module in modules:
        if any(entry in name for entry in protected):
            kept.append(name)
        else:
            found[name] = module
    return found, kept


def width(mlp: nn.Module) -> int:
    return getattr(mlp, MLP_LINEARS[type(mlp).__name__][1]).in_features


def kept_width(
    original: int, ratio: float, field: str = "pruning_ratio", parts: str = "channels of an MLP"
) -> int:
    """Parts (channels, head groups) of `original` kept at `ratio`: original - round(ratio * original).

    Raises ValueError naming PruningConfig's `field` where none would be left."""
    keep = original - round(ratio * original)
    if keep < 1:
        raise ValueError(f"PruningConfig.{field}: got {ratio}, which removes all {original} {parts}")
    return keep


def channel_scores(mlp: nn.Module, input_sq_norms: torch.Tensor | None) -> torch.Tensor:
    """(width,) importance of each channel (see the module docstring); None: the column norms alone."""
    reader = getattr(mlp, MLP_LINEARS[type(mlp).__name__][1])
    scores = reader.weight.detach().float().norm(dim=0)
    if input_sq_norms is not None:
        scores = scores * input_sq_norms.float().sqrt()
    return scores


def keep_channels(mlp: nn.Module, kept: torch.Tensor) -> None:
    """Shrink `mlp` in place to channels `kept` (sorted indices): rows of its producers, columns of its
    reader."""
    producers, reader = MLP_LINEARS[type(mlp).__name__]
    for name in producers:
        setattr(mlp, name, keep_rows(getattr(mlp, name), kept))
    setattr(mlp, reader, keep_columns(getattr(mlp, reader), kept))


def keep_rows(old: nn.Linear, rows: torch.Tensor) -> nn.Linear:
    """A linear of `old`'s output rows `rows` (weights and bias copied)."""
    new = linear_like(old, old.in_features, len(rows))
    with torch.no_grad():
        new.weight.copy_(old.weight[rows])
        if old.bias is not None:
            new.bias.copy_(old.bias[rows])
    return new


def keep_columns(old: nn.Linear, columns: torch.Tensor) -> nn.Linear:
    """A linear reading only `old`'s inputs `columns` (its bias unchanged)."""
    new = linear_like(old, len(columns), old.out_features)
    with torch.no_grad():
        new.weight.copy_(old.weight[:, columns])
        if old.bias is not None:
            new.bias.copy_(old.bias)
    return new


def resize_channels(mlp: nn.Module, channels: int) -> None:
    """Give `mlp` (built on the meta device) linears of `channels` channels, for stored weights to fill."""
    producers, reader = MLP_LINEARS[type(mlp).__name__]
    for name in producers:
        old = getattr(mlp, name)
        setattr(mlp, name, linear_like(old, old.in_features, channels))
    old = getattr(mlp, reader)
    setattr(mlp, reader, linear_like(old, channels, old.out_features))


def linear_like(old: nn.Linear, in_features: int, out_features: int) -> nn.Linear:
    return nn.Linear(
        in_features, out_features, bias=old.bias is not None, device=old.weight.device, dtype=old.weight.dtype
    )
