"""Write Qwen3-VL checkpoints in HF format: the files a real checkpoint directory holds.

Tests and the demo use small random checkpoints written here, so they exercise the same loading code
a user's real checkpoint goes through.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from slimvl.atomic import write_directory_atomic
from slimvl.models.builder import config_from_dict, random_model
from slimvl.models.preprocess import Preprocessor
from slimvl.models.tokenizer import build_tokenizer, special_token_ids


def qwen3vl_image_processor(
    min_pixels: int = 65536, max_pixels: int = 16777216, patch_size: int = 16
) -> Qwen2VLImageProcessorPil:
    """The image processor settings Qwen3-VL checkpoints ship with (patch 16, merge 2, mean/std 0.5)."""
    return Qwen2VLImageProcessorPil(
        patch_size=patch_size,
        merge_size=2,
        temporal_patch_size=2,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
        size={"shortest_edge": min_pixels, "longest_edge": max_pixels},
    )


def small_config_dict(
    vocab_size: int,
    text_hidden: int = 64,
    text_layers: int = 4,
    vision_hidden: int = 32,
    vision_depth: int = 4,
    deepstack: tuple[int, ...] = (0, 1, 2),
) -> dict:
    """A Qwen3-VL config of small sizes with every structural feature of the real ones
    (DeepStack, interleaved MRoPE, GQA, tied embeddings, patch 16, spatial merge 2)."""
    head_dim = 16
    return {
        "architectures": ["Qwen3VLForConditionalGeneration"],
        "model_type": "qwen3_vl",
        "tie_word_embeddings": True,
        "text_config": {
            "model_type": "qwen3_vl_text",
            "vocab_size": vocab_size,
            "hidden_size": text_hidden,
            "intermediate_size": text_hidden * 3,
            "num_hidden_layers": text_layers,
            "num_attention_heads": text_hidden // head_dim,
            "num_key_value_heads": max(1, text_hidden // head_dim // 2),
            "head_dim": head_dim,
            "hidden_act": "silu",
            "max_position_embeddings": 4096,
            "rms_norm_eps": 1e-6,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 5000000,
                "mrope_interleaved": True,
                "mrope_section": [4, 2, 2],
            },
            "tie_word_embeddings": True,
        },
        "vision_config": {
            "model_type": "qwen3_vl",
            "depth": vision_depth,
            "hidden_size": vision_hidden,
            "intermediate_size": vision_hidden * 4,
            "num_heads": max(1, vision_hidden // head_dim),
            "out_hidden_size": text_hidden,
            "patch_size": 16,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "num_position_embeddings": 256,
            "deepstack_visual_indexes": list(deepstack),
            "hidden_act": "gelu_pytorch_tanh",
        },
    }


def save_checkpoint(
    model: Qwen3VLForConditionalGeneration, preprocessor: Preprocessor, path: str | Path
) -> Path:
    """Save model, tokenizer and image processor in HF format, atomically (temp dir, then rename)."""

    def fill(tmp: Path) -> None:
        model.save_pretrained(tmp)
        preprocessor.save_pretrained(tmp)

    return write_directory_atomic(path, fill)


def write_random_checkpoint(path: str | Path, seed: int = 0, std: float = 0.2, **sizes: int) -> Path:
    """A small random Qwen3-VL checkpoint on disk (config, safetensors, tokenizer, processor, template)."""
    tokenizer = build_tokenizer([], vocab_size=512)
    raw = small_config_dict(vocab_size=len(tokenizer), **sizes)
    config: Qwen3VLConfig = config_from_dict(raw, **special_token_ids(tokenizer))
    model = random_model(config, torch.float32, seed=seed, std=std)
    preprocessor = Preprocessor(tokenizer, qwen3vl_image_processor(max_pixels=512 * 512))
    return save_checkpoint(model, preprocessor, path)
