"""Export an int8 optimized directory as a compressed-tensors checkpoint (the format llm-compressor
writes and vLLM and transformers load): ``format: int-quantized``, int8 per-channel symmetric weights
(``weight`` int8, ``weight_scale`` (N, 1)), dynamic per-token symmetric int8 activations, every linear
slimvl kept in floating point listed in ``ignore``.

slimvl's int8 embedding table (per-row scales, read weight-only by the tied ``lm_head``) has no
counterpart in that scheme: it is written dequantized, in fp32, which are the numbers slimvl computes
with, and ``lm_head`` (tied to it) is ignored. Token sparsification acts at run time and is not part
of a checkpoint. The original config (plus ``quantization_config``), tokenizer and processor files
are copied; the directory is written atomically.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from accelerate import init_empty_weights
from compressed_tensors.quantization import QuantizationArgs, QuantizationConfig, QuantizationScheme
from safetensors.torch import save_file
from torch import nn
from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

from slimvl.atomic import write_directory_atomic
from slimvl.errors import InputError
from slimvl.optimized import MANIFEST, WEIGHTS, is_optimized_dir, load_weights, read_manifest

FORMAT = "int-quantized"
WEIGHTS_FILE = "model.safetensors"
# plans a compressed-tensors int8 checkpoint can express (token sparsification is run time, no plan)
EXPORTABLE_PLANS = {"int8", "pruning"}


def int8_scheme(activations: str) -> QuantizationScheme:
    """W8A8 (``dynamic``: per-token int8 activations) or W8A16 (``weight_only``) over Linear modules."""
    weights = QuantizationArgs(num_bits=8, type="int", symmetric=True, strategy="channel", dynamic=False)
    inputs = None
    if activations == "dynamic":
        inputs = QuantizationArgs(num_bits=8, type="int", symmetric=True, strategy="token", dynamic=True)
    return QuantizationScheme(targets=["Linear"], weights=weights, input_activations=inputs)


def export_compressed_tensors(source: str | Path, out_dir: str | Path) -> Path:
    """Write `source` (an optimized directory with an int8 plan) to `out_dir` as compressed-tensors."""
    source = Path(source)
    if not is_optimized_dir(source):
        raise InputError(
            f"'{source}' is not an optimized directory (run `slimvl optimize ... --recipe int8` first)"
        )
    manifest = read_manifest(source)
    plans = manifest["plans"]
    int8 = plans.get("int8")
    if int8 is None:
        raise InputError(f"'{source}' has no int8 plan: the compressed-tensors export writes int8 models")
    others = sorted(set(plans) - EXPORTABLE_PLANS)
    if others:
        raise InputError(
            f"'{source}' also holds {', '.join(others)}, which compressed-tensors int8 cannot express"
        )
    if plans.get("pruning", {}).get("structured"):
        raise InputError(
            f"'{source}' is structurally pruned: its per-layer widths do not fit a Hugging Face config"
        )
    mode = int8["config"]["quantization_mode"]
    if mode not in ("dynamic", "weight_only"):
        raise InputError(
            f"'{source}' uses int8 mode {mode!r}; the export writes 'dynamic' (per-token activations) or 'weight_only'"
        )
    config = json.loads((source / "config.json").read_text())
    state = load_weights(source, manifest)
    stored, linears = _compressed_state(state, int8["modules"])
    ignore = sorted(set(_linear_names(Qwen3VLConfig.from_dict(config))) - set(linears))
    quantization = QuantizationConfig(
        config_groups={"group_0": int8_scheme(mode)},
        format=FORMAT,
        ignore=ignore,
        quantization_status="compressed",
    )
    config["quantization_config"] = quantization.model_dump(mode="json", exclude_none=True)

    def fill(tmp: Path) -> None:
        for item in source.iterdir():
            if item.name not in (MANIFEST, WEIGHTS, "config.json") and item.is_file():
                shutil.copy2(item, tmp / item.name)
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        save_file(
            {k: v.contiguous() for k, v in stored.items()}, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"}
        )

    return write_directory_atomic(out_dir, fill)


def _compressed_state(
    state: dict[str, torch.Tensor], modules: dict[str, dict]
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The checkpoint's tensors (names as transformers has them) and the names of the int8 linears."""
    out, linears = dict(state), []
    for name, record in modules.items():
        if record["kind"] == "linear":
            out[f"{name}.weight"] = out.pop(f"{name}.qweight")
            out[f"{name}.weight_scale"] = out.pop(f"{name}.w_scale").float().unsqueeze(1)
            linears.append(name)
        elif record["kind"] == "lm_head" and record["tied_to"] is not None:
            for key in [k for k in out if k.startswith(f"{name}.")]:  # tied: the embedding is its weight
                del out[key]
        elif record["kind"] in ("embedding", "lm_head"):
            codes = out.pop(f"{name}.qweight")
            scale = out.pop(f"{name}.scale") if f"{name}.scale" in out else out.pop(f"{name}.w_scale")
            out[f"{name}.weight"] = codes.float() * scale.float().unsqueeze(1)
    leftovers = [k for k in out if k.endswith((".qweight", ".w_scale", ".act_scale"))]
    if leftovers:
        raise InputError(f"the export does not know how to write {leftovers[0]}")
    return out, linears


def _linear_names(config: Qwen3VLConfig) -> list[str]:
    with init_empty_weights():
        model = Qwen3VLForConditionalGeneration(config)
    return [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
