"""Build Qwen3-VL models from a config: on the meta device, materialized directly in the storage dtype.

Building on meta and filling each parameter in place means an 8B-shape model in bf16 never holds an
fp32 copy: peak memory is the final footprint.
"""

from __future__ import annotations

import json
from importlib import resources

import torch
from accelerate import init_empty_weights
from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

SHAPE_NAMES = ("2b", "4b", "8b")
_POOL_SIZE = 1 << 22


def shape_config(name: str, **token_ids: int) -> Qwen3VLConfig:
    """The config of a real Qwen3-VL size (read from `shapes/NAME.json`), token ids overridden."""
    if name not in SHAPE_NAMES:
        raise ValueError(f"unknown shape '{name}', allowed: {', '.join(SHAPE_NAMES)}")
    raw = json.loads(resources.files("slimvl.models").joinpath(f"shapes/{name}.json").read_text())
    return config_from_dict(raw, **token_ids)


def config_from_dict(raw: dict, **token_ids: int) -> Qwen3VLConfig:
    raw = json.loads(json.dumps(raw))  # deep copy
    text_ids = {k: v for k, v in token_ids.items() if k in ("bos_token_id", "eos_token_id", "pad_token_id")}
    raw["text_config"].update(text_ids)
    raw.update({k: v for k, v in token_ids.items() if k not in text_ids})
    return Qwen3VLConfig(**raw)


def random_model(
    config: Qwen3VLConfig, dtype: torch.dtype = torch.float32, seed: int = 0, std: float = 0.02
) -> Qwen3VLForConditionalGeneration:
    """A Qwen3-VL with random weights (normal(0, std) matrices, unit norms), built without an fp32 copy.

    Matrices are filled from one pool of normal samples at random offsets: drawing billions of fresh
    samples costs tens of seconds at 2B scale, copying costs well under one.
    """
    with init_empty_weights(include_buffers=False):
        model = Qwen3VLForConditionalGeneration(config)
    generator = torch.Generator().manual_seed(seed)
    pool = torch.randn(_POOL_SIZE, generator=generator).mul_(std).to(dtype)
    for module_name, module in model.named_modules():
        for name, param in list(module.named_parameters(recurse=False)):
            full = f"{module_name}.{name}" if module_name else name
            if config.tie_word_embeddings and full == "lm_head.weight":
                continue
            value = torch.empty(param.shape, dtype=dtype)
            if name == "bias":
                value.zero_()
            elif param.dim() == 1:
                value.fill_(1.0)
            else:
                _fill_from_pool(value, pool, generator)
            module._parameters[name] = torch.nn.Parameter(value, requires_grad=False)
    if config.tie_word_embeddings:
        model.lm_head.weight = model.model.language_model.embed_tokens.weight
    model.eval()
    return model


def _fill_from_pool(value: torch.Tensor, pool: torch.Tensor, generator: torch.Generator) -> None:
    flat = value.view(-1)
    done = 0
    while done < flat.numel():
        start = int(torch.randint(0, pool.numel(), (1,), generator=generator))
        take = min(pool.numel() - start, flat.numel() - done)
        flat[done : done + take] = pool[start : start + take]
        done += take
