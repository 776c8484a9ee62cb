"""Resolve a model reference to a Qwen3-VL model and its preprocessor.

References: a local HF checkpoint directory, `builtin:tiny` (shipped in the package), or
`builtin:2b-shape` / `builtin:4b-shape` / `builtin:8b-shape` (real sizes, random weights).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch
from safetensors import SafetensorError
from transformers import Qwen3VLForConditionalGeneration

from slimvl.config import INT8QuantizationConfig
from slimvl.errors import ModelLoadError
from slimvl.models.builder import SHAPE_NAMES, random_model, shape_config
from slimvl.models.checkpoint import qwen3vl_image_processor
from slimvl.models.preprocess import Preprocessor
from slimvl.models.tokenizer import build_tokenizer, special_token_ids

BUILTIN_PREFIX = "builtin:"
SUPPORTED_ARCHITECTURE = "Qwen3VLForConditionalGeneration"
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class LoadedModel:
    model: Qwen3VLForConditionalGeneration
    preprocessor: Preprocessor
    source: str  # the reference it was loaded from
    path: Path | None  # the directory holding its files, if any
    # a compressed-tensors checkpoint's int8 scheme, as the int8 config that quantizes it again
    stored_int8: INT8QuantizationConfig | None = None


def builtin_names() -> list[str]:
    return ["builtin:tiny", *(f"builtin:{s}-shape" for s in SHAPE_NAMES)]


def tiny_path() -> Path:
    return Path(str(resources.files("slimvl.models").joinpath("assets/tiny")))


def load_model(ref: str, dtype: str = "fp32") -> LoadedModel:
    if dtype not in DTYPES:
        raise ModelLoadError(f"dtype: got '{dtype}', allowed: {', '.join(DTYPES)}")
    if ref.startswith(BUILTIN_PREFIX):
        return _load_builtin(ref, DTYPES[dtype])
    return load_checkpoint_dir(Path(ref), DTYPES[dtype], source=ref)


def _load_builtin(ref: str, dtype: torch.dtype) -> LoadedModel:
    name = ref[len(BUILTIN_PREFIX) :]
    if name == "tiny":
        path = tiny_path()
        if not (path / "config.json").is_file():
            raise ModelLoadError(
                "builtin:tiny is not shipped in this installation (run scripts/train_tiny.py)"
            )
        return load_checkpoint_dir(path, dtype, source=ref)
    if name.endswith("-shape") and name[: -len("-shape")] in SHAPE_NAMES:
        tokenizer = build_tokenizer([], vocab_size=512)
        config = shape_config(name[: -len("-shape")], **special_token_ids(tokenizer))
        model = random_model(config, dtype)
        return LoadedModel(model, Preprocessor(tokenizer, qwen3vl_image_processor()), ref, None)
    raise ModelLoadError(f"unknown model '{ref}', builtin models: {', '.join(builtin_names())}")


def read_checkpoint_config(path: Path, require_weights: bool = True) -> dict:
    """Check that `path` is a Qwen3-VL checkpoint (dense, or int8 in compressed-tensors) and return its
    config.json."""
    if not path.exists():
        raise ModelLoadError(
            f"model not found: '{path}' is neither a directory nor a builtin ({', '.join(builtin_names())})"
        )
    if not path.is_dir():
        raise ModelLoadError(f"model '{path}' is a file; a checkpoint is a directory")
    config_file = path / "config.json"
    if not config_file.is_file():
        raise ModelLoadError(f"'{path}' has no config.json: not an HF checkpoint")
    try:
        raw = json.loads(config_file.read_text())
    except json.JSONDecodeError as exc:
        raise ModelLoadError(f"{config_file} is not valid JSON: {exc}") from exc
    architectures = raw.get("architectures") or []
    model_type = raw.get("model_type")
    if model_type != "qwen3_vl" or SUPPORTED_ARCHITECTURE not in architectures:
        raise ModelLoadError(
            f"'{path}' holds a {model_type or 'unknown'} model ({', '.join(architectures) or 'no architectures'}); "
            f"slimvl supports dense Qwen3-VL ({SUPPORTED_ARCHITECTURE}, model_type qwen3_vl)"
        )
    if require_weights and not any(path.glob("*.safetensors")):
        raise ModelLoadError(f"'{path}' has no *.safetensors weights")
    return raw


def load_checkpoint_dir(path: Path, dtype: torch.dtype, source: str) -> LoadedModel:
    raw = read_checkpoint_config(path)
    if raw.get("quantization_config"):
        raise ModelLoadError(
            f"'{path}' is a quantized checkpoint ({raw['quantization_config'].get('quant_method')}); "
            "slimvl reads quantized checkpoints in the compressed-tensors int8 format only"
        )
    try:
        model = Qwen3VLForConditionalGeneration.from_pretrained(path, dtype=dtype)
        preprocessor = Preprocessor.from_pretrained(path)
    except (OSError, ValueError, RuntimeError, SafetensorError) as exc:
        raise ModelLoadError(f"cannot load checkpoint '{path}': {str(exc).splitlines()[0]}") from exc
    model.eval()
    return LoadedModel(model, preprocessor, source, path)
