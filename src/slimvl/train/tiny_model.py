"""The `builtin:tiny` model: its sizes, tokenizer and processor, and the training-time helpers that touch
its modules."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from slimvl.data import ANSWER_VOCABULARY, corpus_texts
from slimvl.models.builder import config_from_dict
from slimvl.models.checkpoint import qwen3vl_image_processor, small_config_dict
from slimvl.models.preprocess import Preprocessor
from slimvl.models.tokenizer import build_tokenizer, special_token_ids

TINY_SIZES = {
    "text_hidden": 192,
    "text_layers": 4,
    "vision_hidden": 128,
    "vision_depth": 3,
    "deepstack": (0, 1, 2),
}
# The tiny model sees every image at about 256x256 pixels (64 visual tokens), as its processor config
# says: 448x448 inputs are resized by the processor, at inference exactly as in training.
TINY_PIXELS = 256 * 256


def build_preprocessor() -> Preprocessor:
    # Answers appear alone after "assistant\n", so they are in the corpus alone too: one token each.
    tokenizer = build_tokenizer([*corpus_texts(), *ANSWER_VOCABULARY], vocab_size=1024)
    return Preprocessor(tokenizer, qwen3vl_image_processor(min_pixels=TINY_PIXELS, max_pixels=TINY_PIXELS))


def tiny_config(preprocessor: Preprocessor):
    raw = small_config_dict(vocab_size=len(preprocessor.tokenizer), **TINY_SIZES)
    raw["text_config"].update(
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=48,
        intermediate_size=576,
        rope_parameters={**raw["text_config"]["rope_parameters"], "mrope_section": [8, 8, 8]},
    )
    raw["vision_config"].update(num_heads=2, intermediate_size=512, num_position_embeddings=256)
    return config_from_dict(raw, **special_token_ids(preprocessor.tokenizer))


def patch_embed_as_linear(module: torch.nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    """The patch embedding's Conv3d (kernel == stride == the whole patch) computed as the linear map it is.

    Same parameters, same result; on a CPU its backward pass is several times faster than the conv's.
    """
    weight = module.proj.weight
    return torch.nn.functional.linear(
        pixels.to(weight.dtype), weight.view(weight.shape[0], -1), module.proj.bias
    )


def load_weights(model: torch.nn.Module, init: str) -> None:
    state = load_file(str(Path(init) / "model.safetensors"))
    missing, unexpected = model.load_state_dict(state, strict=False)
    # Tied embeddings: the checkpoint stores the table once and lm_head shares it.
    if unexpected or set(missing) - {"lm_head.weight"}:
        raise ValueError(f"init: {init} does not match the tiny model ({missing=}, {unexpected=})")
