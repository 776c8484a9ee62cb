"""Read a compressed-tensors int8 checkpoint (what `slimvl export` or llm-compressor writes): the int8
weights are made float (codes x per-channel scale, exactly) and slimvl's own int8 recipe, matching the
checkpoint's scheme, quantizes them again at load time, into slimvl's kernels. A symmetric per-channel
int8 row whose largest code is 127 gets back its own scale and codes.

Read: ``format`` ``int-quantized`` or ``naive-quantized``, one scheme over ``Linear`` modules with
8-bit symmetric per-channel integer weights and either dynamic per-token 8-bit integer activations
(slimvl's ``dynamic`` mode) or none (``weight_only``); ``ignore`` naming modules and ``re:`` patterns,
as long as what it leaves quantized is what slimvl's switches (attention, MLP, vision) select.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from accelerate import init_empty_weights
from safetensors.torch import load_file
from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

from slimvl.config import INT8QuantizationConfig
from slimvl.errors import ModelLoadError
from slimvl.models.loader import DTYPES, LoadedModel, read_checkpoint_config
from slimvl.models.preprocess import Preprocessor
from slimvl.quant.targets import select_linears

QUANT_METHOD = "compressed-tensors"
FORMATS = ("int-quantized", "naive-quantized")


def is_compressed_tensors(ref: str) -> bool:
    """Whether `ref` is a checkpoint directory whose config says compressed-tensors."""
    config = Path(ref) / "config.json"
    if ref.startswith("builtin:") or not config.is_file():
        return False
    try:
        raw = json.loads(config.read_text())
    except json.JSONDecodeError:
        return False  # the checkpoint loader says what is wrong with it
    return (raw.get("quantization_config") or {}).get("quant_method") == QUANT_METHOD


def load_compressed_tensors(ref: str, dtype: str = "fp32") -> LoadedModel:
    """The model with float weights, its `stored_int8` the int8 config that quantizes it as the
    checkpoint was."""
    path = Path(ref)
    raw_config = read_checkpoint_config(path)
    quantization = raw_config["quantization_config"]
    plain = {k: v for k, v in raw_config.items() if k != "quantization_config"}
    config = Qwen3VLConfig.from_dict(plain)
    with init_empty_weights():
        model = Qwen3VLForConditionalGeneration(config)
    int8 = _int8_config(quantization, model, path)
    state: dict[str, torch.Tensor] = {}
    try:
        for file in sorted(path.glob("*.safetensors")):
            state |= load_file(file)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot read the weights of '{path}': {exc}") from exc
    for key in [k for k in state if k.endswith(".weight_scale")]:
        name = key[: -len(".weight_scale")]
        codes, scale = state.pop(f"{name}.weight"), state.pop(key)
        if codes.dtype != torch.int8 or scale.shape not in ((codes.shape[0], 1), (codes.shape[0],)):
            raise ModelLoadError(f"'{path}': {name} is not int8 with one scale per output channel")
        state[f"{name}.weight"] = codes.float() * scale.float().view(-1, 1)
    if dtype not in DTYPES:
        raise ModelLoadError(f"dtype: got '{dtype}', allowed: {', '.join(DTYPES)}")
    state = {k: v.to(DTYPES[dtype]) if v.is_floating_point() else v for k, v in state.items()}
    try:
        model.load_state_dict(state, strict=False, assign=True)
    except RuntimeError as exc:
        raise ModelLoadError(
            f"'{path}': the weights do not fit the model: {str(exc).splitlines()[0]}"
        ) from exc
    model.tie_weights()
    missing = [n for n, p in model.named_parameters() if p.is_meta]
    if missing:
        raise ModelLoadError(f"'{path}' lacks the weight {missing[0]}")
    return LoadedModel(model.eval(), Preprocessor.from_pretrained(path), ref, path, int8)


def _int8_config(quantization: dict, model: torch.nn.Module, path: Path) -> INT8QuantizationConfig:
    fmt = quantization.get("format")
    groups = list((quantization.get("config_groups") or {}).values())
    if fmt not in FORMATS or len(groups) != 1:
        raise ModelLoadError(
            f"'{path}': slimvl reads compressed-tensors int8 checkpoints ({' or '.join(FORMATS)}, one "
            f"config group); this one has format {fmt!r} and {len(groups)} groups"
        )
    scheme = groups[0]
    weights, inputs = scheme.get("weights") or {}, scheme.get("input_activations")
    int8_weights = (
        weights.get("num_bits") == 8
        and weights.get("type") == "int"
        and weights.get("symmetric", True)
        and weights.get("strategy") == "channel"
    )
    token_inputs = inputs is not None and (
        inputs.get("num_bits") == 8
        and inputs.get("type") == "int"
        and inputs.get("symmetric", True)
        and inputs.get("strategy") == "token"
        and inputs.get("dynamic") is True
    )
    if not int8_weights or not (inputs is None or token_inputs) or scheme.get("targets") != ["Linear"]:
        raise ModelLoadError(
            f"'{path}': its scheme is not one slimvl runs (int8 symmetric per-channel weights on Linear "
            "modules, with dynamic per-token int8 activations or none)"
        )
    # slimvl quantizes the tied table and lm_head by its own rule (`quantize_embeddings`)
    quantized = set(_quantized_linears(model, quantization.get("ignore") or [])) - {"lm_head"}
    for vision in (True, False):
        for attention in (True, False):
            for mlp in (True, False):
                config = INT8QuantizationConfig(
                    quantization_mode="dynamic" if token_inputs else "weight_only",
                    quantize_vision=vision,
                    quantize_attention=attention,
                    quantize_mlp=mlp,
                )
                if set(select_linears(model, config)) == quantized:
                    return config
    raise ModelLoadError(
        f"'{path}': its ignore list leaves a set of int8 linears slimvl's int8 switches (attention, MLP, "
        "vision) cannot select"
    )


def _quantized_linears(model: torch.nn.Module, ignore: list[str]) -> list[str]:
    patterns = [re.compile(entry[3:]) for entry in ignore if entry.startswith("re:")]
    names = {entry for entry in ignore if not entry.startswith("re:")}
    return [
        name
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear)
        and name not in names
        and not any(p.match(name) for p in patterns)
    ]
