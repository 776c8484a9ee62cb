"""The `adaptive_precision` recipe section: measure each unit's sensitivity, plan its format, store it
so (int4, int8 through the int8 quantizer, 16-bit or fp32), rebuild that from the saved plan, and put
the run-time controller in front of the request hooks."""

from __future__ import annotations

import dataclasses

from torch import nn

from slimvl.config import AdaptivePrecisionConfig, INT8QuantizationConfig
from slimvl.errors import ModelLoadError
from slimvl.models.hooks import Applied, CalibrationRuns, RequestHooks
from slimvl.models.loader import LoadedModel
from slimvl.models.weights import weight_bytes
from slimvl.precision import int4_kernel, planner, sensitivity
from slimvl.precision.convert import convert, empty_module
from slimvl.precision.int4_modules import Int4Embedding, TiedInt4LMHead
from slimvl.precision.runtime import controlled
from slimvl.precision.units import EMBEDDING, FORMAT_BITS, LM_HEAD, Unit, model_units
from slimvl.quant.apply import build_quantized_skeleton, quantize_model
from slimvl.quant.plan import QuantPlan

PLAN_VERSION = 1


def allowed_formats(config: AdaptivePrecisionConfig) -> list[str]:
    sixteen = next(
        (
            p
            for p in (config.base_precision, config.min_precision, config.max_precision)
            if p in ("fp16", "bf16")
        ),
        "bf16",
    )
    return planner.formats_between(config.min_precision, config.max_precision, sixteen)


def unit_formats(unit: Unit, allowed: list[str]) -> list[str]:
    """The formats ``unit`` may take (a table: no 16-bit storage)."""
    return [
        f
        for f in allowed
        if unit.allows(f) and not (unit.role in ("table", "lm_head") and FORMAT_BITS[f] == 16)
    ]


def budget_bytes(units: list[Unit], config: AdaptivePrecisionConfig) -> int:
    if config.target_bits is not None:
        return int(sum(u.params for u in units) * config.target_bits / 8)
    return sum(u.nbytes(config.base_precision if u.allows(config.base_precision) else "int8") for u in units)


VISION_ROLES = ("vision_attn", "vision_mlp", "merger")


def fixed_formats(units: list[Unit], config: AdaptivePrecisionConfig) -> dict[str, str]:
    """The units ``vision_precision`` settles (int8 where a unit cannot take int4)."""
    fmt = config.vision_precision
    if fmt is None:
        return {}
    return {u.name: fmt if u.allows(fmt) else "int8" for u in units if u.role in VISION_ROLES}


def plan_formats(
    units: list[Unit], config: AdaptivePrecisionConfig, divergence: dict[str, dict[str, float]] | None
) -> dict[str, str]:
    fixed = fixed_formats(units, config)
    planned = [u for u in units if u.name not in fixed]
    return {**_plan(planned, config, divergence), **fixed}


def _plan(
    units: list[Unit], config: AdaptivePrecisionConfig, divergence: dict[str, dict[str, float]] | None
) -> dict[str, str]:
    allowed = allowed_formats(config)
    if config.plan == "uniform":
        return {u.name: next(f for f in unit_formats(u, allowed)) for u in units}
    if config.plan == "llama_cpp":
        low = allowed[0]
        high = allowed[1] if len(allowed) > 1 else low
        return planner.llama_cpp_plan(units, low, high)
    budget = budget_bytes(units, config)
    try:
        return planner.sensitivity_plan(units, divergence, budget, config.sensitivity_budget)
    except ValueError:
        smallest = sum(u.nbytes(unit_formats(u, allowed)[0]) for u in units)
        field = "target_bits" if config.target_bits is not None else "base_precision"
        raise ValueError(
            f"AdaptivePrecisionConfig.{field}: a budget of {budget} bytes, allowed: at least {smallest} bytes "
            f"({smallest * 8 / sum(u.params for u in units):.2f} bits per weight, what min_precision "
            f"{config.min_precision!r} reaches)"
        ) from None


def apply(loaded: LoadedModel, config: AdaptivePrecisionConfig, calibration: CalibrationRuns) -> Applied:
    model = loaded.model
    units = model_units(model)
    allowed = allowed_formats(config)
    planned = [u for u in units if u.name not in fixed_formats(units, config)]
    divergence = None
    if config.plan == "sensitivity":
        run = calibration(config.calibration_samples, 1)
        divergence = sensitivity.measure(model, planned, lambda u: unit_formats(u, allowed), run)
    formats = plan_formats(units, config, divergence)
    timings: dict = {}
    modules: dict[str, dict] = {}
    for unit in units:  # int8 is the int8 quantizer's (below); an fp32 table stays as it is
        fmt = formats[unit.name]
        if fmt != "int8" and not (unit.role == "table" and fmt == "fp32"):
            modules.update(convert(model, unit, fmt, timings))
    int8_units = [u for u in units if formats[u.name] == "int8"]
    int8_config = INT8QuantizationConfig(
        quantization_mode="dynamic", quantize_embeddings=any(u.role == "table" for u in int8_units)
    )
    int8_names = [m for u in int8_units if u.role != "table" for m in u.modules]
    int8_plan = quantize_model(model, int8_config, None, pack=False, names=int8_names)
    plan = {
        "version": PLAN_VERSION,
        "config": dataclasses.asdict(config),
        "method": config.plan,
        "budget_bytes": budget_bytes(planned, config) if config.plan == "sensitivity" else None,
        "formats": formats,
        "units": {
            u.name: {
                "role": u.role,
                "modules": list(u.modules),
                "params": u.params,
                "bytes": {
                    f: u.nbytes(f) for f in dict.fromkeys([*unit_formats(u, allowed), formats[u.name]])
                },
                "divergence": None if divergence is None else divergence.get(u.name),
            }
            for u in units
        },
        "planned_bytes": planner.total_bytes(units, formats),
        "budgeted_bytes": planner.total_bytes(planned, formats),
        "planned_divergence": (
            None
            if divergence is None
            else planner.total_divergence(divergence, {n: f for n, f in formats.items() if n in divergence})
        ),
        "modules": modules,
        "int8": int8_plan.to_dict(),
        "int4_kernel": int4_kernel.kernel_name(),
        "kernel_timings": timings,
    }
    return Applied(hooks=_hooks(loaded, config), plan=plan)


def _hooks(loaded: LoadedModel, config: AdaptivePrecisionConfig) -> RequestHooks | None:
    if not config.enable_dynamic_precision:
        return None
    return controlled(loaded, weight_bytes(loaded.model), config.memory_headroom_mb)


def runtime(loaded: LoadedModel, config: AdaptivePrecisionConfig) -> RequestHooks | None:
    return _hooks(loaded, config)


def rebuild(model: nn.Module, plan: dict) -> None:
    if plan.get("version") != PLAN_VERSION:
        raise ModelLoadError(
            f"adaptive precision plan version {plan.get('version')!r}: this slimvl reads {PLAN_VERSION}"
        )
    build_quantized_skeleton(model, QuantPlan.from_dict(plan["int8"]))  # first: it ties the float table
    for name, entry in plan["modules"].items():
        _check_shape(model, name, entry)
        if entry["kind"] == "linear":
            model.set_submodule(name, empty_module(entry))
    if EMBEDDING in plan["modules"]:
        entry = plan["modules"][EMBEDDING]
        vocab, dim = entry["shape"]
        table = Int4Embedding(vocab, dim, device="meta")
        model.set_submodule(EMBEDDING, table)
        if LM_HEAD in plan["modules"]:
            model.set_submodule(LM_HEAD, TiedInt4LMHead(table, plan["modules"][LM_HEAD]["prefill_kernel"]))


def _check_shape(model: nn.Module, name: str, entry: dict) -> None:
    try:
        module = model.get_submodule(name)
    except AttributeError:
        raise ModelLoadError(f"the adaptive precision plan names {name!r}, which the model lacks") from None
    weight = getattr(module, "weight", None)
    if weight is None or list(weight.shape) != list(entry["shape"]):
        shape = None if weight is None else list(weight.shape)
        raise ModelLoadError(
            f"the adaptive precision plan gives {name!r} the shape {entry['shape']}, the model has {shape}"
        )
