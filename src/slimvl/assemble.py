"""Assemble an optimized model from its saved plans and stored tensors: the one way every optimized
model is put together, whether its tensors come from an optimized directory or from applying a recipe at
load time (so both run the same modules, kernels and memory layout).

The model is built on the meta device, each section rebuilds its empty modules from its plan, and the
stored tensors are assigned to them. A tied int8 table whose `lm_head` packs its own copy is left in a
file (the directory's weights file, or a temporary one) and its lookups read their rows from there,
instead of holding the table in memory twice.
"""

from __future__ import annotations

import os
import tempfile
import weakref
from collections.abc import Callable

import numpy as np
import torch
from accelerate import init_empty_weights
from torch import nn
from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

from slimvl.errors import ModelLoadError
from slimvl.memory import release_free_memory
from slimvl.models.loader import LoadedModel
from slimvl.quant import deduplicated_state_dict, load_quantized_state_dict, prepare_kernels
from slimvl.quant.embedding import TiedInt8LMHead
from slimvl.registry import rebuild_modules

# skip -> every stored tensor but those named in skip, in memory of the process's own
ReadState = Callable[[frozenset[str]], dict[str, torch.Tensor]]
# name -> (the tensor mapped from a file, not read; that file; the offset its bytes start at)
MapTensor = Callable[[str], tuple[torch.Tensor, str, int]]


def assemble_model(
    config: Qwen3VLConfig, plans: dict[str, dict], read_state: ReadState, map_tensor: MapTensor, source: str
) -> nn.Module:
    """The model `plans` describe, filled with the stored tensors and its kernels prepared; `source`
    names where the tensors come from in errors."""
    with init_empty_weights(include_buffers=False):
        model = Qwen3VLForConditionalGeneration(config)
    model.tie_weights()  # the stored state holds a tied table once: lm_head must alias the embedding
    rebuild_modules(model, plans)
    table = _table_left_in_file(model)
    key = f"{table}.qweight"
    state = read_state(frozenset({key} if table else ()))
    if table:
        mapped, file, offset = map_tensor(key)
        state[key] = mapped
    try:
        load_quantized_state_dict(model, state)
    except RuntimeError as exc:
        raise ModelLoadError(
            f"'{source}': the weights do not fit the model: {str(exc).splitlines()[0]}"
        ) from exc
    del state
    if table:
        model.get_submodule(table).leave_in_file(mapped, file, offset)
    prepare_kernels(model)
    release_free_memory()
    return model.eval()


def reassembled(loaded: LoadedModel, plans: dict[str, dict]) -> LoadedModel:
    """The model of `loaded` (a recipe just applied to it in memory), taken out of it and assembled anew
    as its optimized directory would load: the stored tensors move over without a copy, the table is
    left in a temporary file (removed when the table is freed)."""
    state = deduplicated_state_dict(loaded.model)
    config = loaded.model.config
    loaded.model = None  # its modules go now: kernels pack the tensors only once the old ones are freed

    def read_state(skip: frozenset[str]) -> dict[str, torch.Tensor]:
        return {name: tensor for name, tensor in state.items() if name not in skip}

    def map_to_temporary_file(name: str) -> tuple[torch.Tensor, str, int]:
        tensor = state.pop(name)
        fd, path = tempfile.mkstemp(prefix="slimvl-table-", suffix=".bin")
        with os.fdopen(fd, "wb") as f:
            f.write(memoryview(tensor.contiguous().view(-1).view(torch.uint8).numpy()))
        mapped = torch.from_numpy(np.memmap(path, dtype=np.int8, mode="c", shape=tuple(tensor.shape)))
        weakref.finalize(mapped, _remove, path)
        return mapped, path, 0

    model = assemble_model(config, plans, read_state, map_to_temporary_file, "the applied recipe")
    return LoadedModel(model, loaded.preprocessor, loaded.source, loaded.path)


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _table_left_in_file(model: nn.Module) -> str | None:
    """The embedding whose int8 table a tied head packs its own copy of: its lookups then read the
    table from a file instead of holding it in memory a second time. None if there is none."""
    head = getattr(model, "lm_head", None)
    if not (isinstance(head, TiedInt8LMHead) and head.packs_copy):
        return None
    return next(name for name, module in model.named_modules() if module is head.table)
