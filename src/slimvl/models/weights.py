"""Count a model's weights: bytes by module group and dtype, and bytes read per decode step."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass

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


@dataclass(frozen=True)
class StoredTensor:
    name: str
    numel: int
    nbytes: int
    dtype: str


def stored_tensors(model: nn.Module) -> Iterator[StoredTensor]:
    """Each stored tensor once (tied weights counted once): parameters and persistent buffers.

    Walks the modules rather than calling `state_dict()`, which would unpack every int8 weight a kernel
    holds packed (a transient copy of the whole model). A module that keeps its weight packed reports it
    through `packed_tensors()`.
    """
    seen: set[int] = set()
    for prefix, module in model.named_modules():
        dot = f"{prefix}." if prefix else ""
        tensors = [*module._parameters.items()]
        tensors += [(k, b) for k, b in module._buffers.items() if k not in module._non_persistent_buffers_set]
        for key, outer in tensors:
            if outer is None or outer.device.type == "meta":
                continue
            for suffix, tensor in _leaves(outer):
                ident = tensor.untyped_storage().data_ptr() + tensor.storage_offset() * tensor.element_size()
                if ident in seen:
                    continue
                seen.add(ident)
                dtype = str(tensor.dtype).removeprefix("torch.")
                yield StoredTensor(
                    dot + key + suffix, tensor.numel(), tensor.numel() * tensor.element_size(), dtype
                )
        packed = getattr(module, "packed_tensors", None)
        if packed is not None:
            for key, numel, nbytes, dtype in packed():
                yield StoredTensor(dot + key, numel, nbytes, dtype)


def _leaves(tensor: torch.Tensor, suffix: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    """The plain tensors that hold `tensor`'s data: itself, or the inner tensors of a wrapper subclass
    (torchao's quantized weights), whose own storage has no data."""
    flatten = getattr(tensor, "__tensor_flatten__", None)
    if flatten is None:
        yield suffix, tensor
        return
    names, _ = flatten()
    for name in names:
        yield from _leaves(getattr(tensor, name), f"{suffix}.{name}")


def weight_bytes(model: nn.Module) -> int:
    return sum(t.nbytes for t in stored_tensors(model))


def weight_table(model: nn.Module) -> dict[str, dict[str, dict[str, int]]]:
    """{group: {dtype: {"params": n, "bytes": b}}}."""
    table: dict[str, dict[str, dict[str, int]]] = defaultdict(
        lambda: defaultdict(lambda: {"params": 0, "bytes": 0})
    )
    for t in stored_tensors(model):
        cell = table[_group(t.name)][t.dtype]
        cell["params"] += t.numel
        cell["bytes"] += t.nbytes
    return {g: dict(d) for g, d in table.items()}


def decode_bytes_per_token(model: nn.Module) -> int:
    """Weight bytes one decode step reads: every decoder layer, the final norm and `lm_head`.

    The embedding lookup reads one row, so an untied embedding table does not count; the vision tower
    does not run during decoding.
    """
    lm_head = dict(model.named_modules()).get("lm_head")
    head = 0
    if lm_head is not None:
        # a tied head reads the embedding table: count it here even though it is stored under the embedding
        head = sum(t.nbytes for t in stored_tensors(lm_head))
    decoder = sum(t.nbytes for t in stored_tensors(model) if _group(t.name) == DECODER)
    return decoder + head
