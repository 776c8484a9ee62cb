"""Count a model's weights: bytes by module group and dtype, and bytes read per decode step."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator

import torch
from torch import nn

VISION = "vision"
DECODER = "decoder layers"
EMBEDDINGS = "embeddings/lm_head"
OTHER = "other"


def _group(name: str) -> str:
    if name.startswith("model.visual."):
        return VISION
    if name.startswith("model.language_model.layers.") or name.startswith("model.language_model.norm."):
        return DECODER
    if name.startswith("lm_head.") or name.startswith("model.language_model.embed_tokens."):
        return EMBEDDINGS
    return OTHER


def stored_tensors(model: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """Each stored tensor once (tied weights counted once): parameters and persistent buffers."""
    seen: set[int] = set()
    for name, tensor in model.state_dict(keep_vars=True).items():
        if tensor.device.type == "meta":
            continue
        key = tensor.untyped_storage().data_ptr()
        if key in seen:
            continue
        seen.add(key)
        yield name, tensor


def weight_bytes(model: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for _, t in stored_tensors(model))


def weight_table(model: nn.Module) -> dict[str, dict[str, dict[str, int]]]:
    """{group: {dtype: {"params": n, "bytes": b}}}."""
    table: dict[str, dict[str, dict[str, int]]] = defaultdict(lambda: defaultdict(lambda: {"params": 0, "bytes": 0}))
    for name, tensor in stored_tensors(model):
        cell = table[_group(name)][str(tensor.dtype).removeprefix("torch.")]
        cell["params"] += tensor.numel()
        cell["bytes"] += tensor.numel() * tensor.element_size()
    return {g: dict(d) for g, d in table.items()}


def decode_bytes_per_token(model: nn.Module) -> int:
    """Weight bytes one decode step reads: every decoder layer, the final norm and `lm_head`.

    The embedding lookup reads one row, so an untied embedding table does not count; the vision tower
    does not run during decoding.
    """
    lm_head = dict(model.named_modules()).get("lm_head")
    head = sum(t.numel() * t.element_size() for t in lm_head.state_dict().values()) if lm_head is not None else 0
    decoder = sum(t.numel() * t.element_size() for n, t in stored_tensors(model) if _group(n) == DECODER)
    return decoder + head
