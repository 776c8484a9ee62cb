"""The public verbs: `load` a model (with a recipe), `generate` an answer, `optimize` a model to a directory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PIL import Image
from transformers import Qwen3VLConfig

from slimvl.assemble import assemble_model, reassembled
from slimvl.calibration import Calibration
from slimvl.config import Recipe, resolve_recipe
from slimvl.device import DevicePlan, plan_device
from slimvl.device.dispatch import dispatch
from slimvl.memory import fix_mmap_threshold
from slimvl.models.hooks import RequestHooks
from slimvl.models.inplace import use_inplace_activations
from slimvl.models.loader import LoadedModel, load_model, read_checkpoint_config
from slimvl.models.preprocess import Preprocessor, load_image
from slimvl.optimized import is_optimized_dir, load_weights, map_tensor, read_manifest, write_optimized
from slimvl.pipeline import Answer, Pipeline
from slimvl.quant import deduplicated_state_dict
from slimvl.quant.compressed_tensors import is_compressed_tensors, load_compressed_tensors
from slimvl.registry import NotBuiltError, apply_recipe, check_built, missing_optimizations, runtime_hooks

# While loading, every block above 128 KiB is its own mapping, so plain weight copies freed during int8
# packing leave RSS at once (2B int8: load peak 3.51 -> 2.51 GB). While running, blocks up to 32 MiB
# come from the heap and are reused: mapping every activation afresh made vision and prefill 1.6-2x
# slower; the request peak stays 0.25 GB below glibc's default (measured on out/2b-int8). Freed blocks at
# the heap top stay while running (up to 512 MiB) instead of being faulted in again by the next
# activation: 2B int8 vision 1.7-1.9 s instead of 2.2-3.1 s, 31 k page faults instead of 130-470 k.
LOAD_MMAP_THRESHOLD = 128 * 1024
RUN_MMAP_THRESHOLD = 32 * 1024 * 1024
RUN_TRIM_THRESHOLD = 512 * 1024 * 1024

__all__ = ["NotBuiltError", "SlimModel", "generate", "load", "missing_optimizations", "optimize"]


@dataclass
class SlimModel:
    """A loaded model with its recipe applied, ready to answer."""

    loaded: LoadedModel
    recipe: Recipe
    pipeline: Pipeline
    plans: dict
    device: DevicePlan | None = None  # where its parts run (None: all on the CPU, nothing planned)

    def generate(
        self,
        images: list[str | Path | Image.Image],
        prompt: str,
        max_new_tokens: int = 64,
        ignore_eos: bool = False,
    ) -> Answer:
        opened = [im if isinstance(im, Image.Image) else load_image(im) for im in images]
        return self.pipeline(opened, prompt, max_new_tokens=max_new_tokens, ignore_eos=ignore_eos)


def load(
    model_ref: str | Path,
    recipe: str | Recipe | None = None,
    dtype: str = "fp32",
    threads: int | None = None,
    calibration: Calibration | None = None,
    device: str = "cpu",
    gpu_layers: int | None = None,
    gpu_rules: tuple[int, int] | None = None,
) -> SlimModel:
    """Load a checkpoint directory, a builtin, or a directory written by `optimize`.

    With a recipe, its optimizations are applied now (int8 quantizes at load time) and the model is
    assembled as its optimized directory would load; an optimized directory carries its own recipe and
    takes none. `device` "cuda" or "auto" places as many decoder layers on the GPU as fit (or
    `gpu_layers`), computed by that GPU's precision rules (or those of capability `gpu_rules`).
    """
    placing = (device, gpu_layers, gpu_rules)
    fix_mmap_threshold(LOAD_MMAP_THRESHOLD)
    try:
        path = Path(model_ref)
        if not str(model_ref).startswith("builtin:") and is_optimized_dir(path):
            if recipe is not None and not resolve_recipe(recipe).is_empty:
                raise ValueError(
                    f"'{path}' is an optimized directory: it carries its recipe, so --recipe is not taken"
                )
            return _load_optimized(path, threads, placing)
        resolved = resolve_recipe(recipe)
        check_built(resolved)
        if is_compressed_tensors(str(model_ref)):
            loaded = load_compressed_tensors(str(model_ref), dtype)
        else:
            loaded = load_model(str(model_ref), dtype=dtype)
        if loaded.stored_int8 is not None and resolved.int8 is None:
            # an int8 checkpoint (compressed-tensors) runs as int8 unless the recipe says how
            name = "int8" if resolved.is_empty else resolved.name
            resolved = Recipe(name, **dict(resolved.configs()), int8=loaded.stored_int8)
        hooks, plans = apply_recipe(loaded, resolved, calibration or Calibration())
        if plans:
            loaded = reassembled(loaded, plans)
            hooks = runtime_hooks(loaded, resolved)
        return _ready(loaded, resolved, plans, threads, hooks, placing)
    finally:
        fix_mmap_threshold(RUN_MMAP_THRESHOLD, RUN_TRIM_THRESHOLD)


def optimize(
    model_ref: str | Path,
    recipe: str | Recipe,
    out_dir: str | Path,
    calibration: Calibration | None = None,
    dtype: str = "fp32",
) -> Path:
    """Apply `recipe` to the model and write the optimized directory (atomically)."""
    resolved = resolve_recipe(recipe)
    check_built(resolved)
    slim = load(model_ref, resolved, dtype=dtype, calibration=calibration)
    loaded = slim.loaded

    def save_originals(tmp: Path) -> None:
        loaded.model.config.save_pretrained(tmp)
        loaded.preprocessor.save_pretrained(tmp)

    state = deduplicated_state_dict(loaded.model)
    return write_optimized(out_dir, state, save_originals, resolved, slim.plans, str(model_ref))


def _load_optimized(path: Path, threads: int | None, placing: tuple) -> SlimModel:
    manifest = read_manifest(path)
    recipe = manifest["recipe_obj"]
    check_built(recipe)
    read_checkpoint_config(path, require_weights=False)
    model = assemble_model(
        Qwen3VLConfig.from_pretrained(path),
        manifest["plans"],
        lambda skip: load_weights(path, manifest, skip),
        lambda name: map_tensor(path, manifest, name),
        str(path),
    )
    loaded = LoadedModel(model, Preprocessor.from_pretrained(path), str(path), path)
    return _ready(loaded, recipe, manifest["plans"], threads, runtime_hooks(loaded, recipe), placing)


def _ready(
    loaded: LoadedModel,
    recipe: Recipe,
    plans: dict,
    threads: int | None,
    hooks: RequestHooks | None,
    placing: tuple[str, int | None, tuple[int, int] | None] = ("cpu", None, None),
) -> SlimModel:
    use_inplace_activations(loaded.model)  # the same numbers, fewer activation-sized buffers
    device, gpu_layers, gpu_rules = placing
    plan = plan_device(loaded.model, device, gpu_layers, gpu_rules)
    if plan.rules is not None:
        dispatch(loaded.model, plan.placement, plan.rules)
    return SlimModel(loaded, recipe, Pipeline(loaded, hooks, threads=threads), plans, plan)


def generate(
    model: SlimModel | str,
    images: list[str | Path | Image.Image],
    prompt: str,
    max_new_tokens: int = 64,
    recipe: str | Recipe | None = None,
) -> Answer:
    """One answer; `model` is a `SlimModel` or a reference to load."""
    slim = model if isinstance(model, SlimModel) else load(model, recipe)
    return slim.generate(images, prompt, max_new_tokens=max_new_tokens)
