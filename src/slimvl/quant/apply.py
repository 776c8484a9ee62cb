"""Quantize a Qwen3-VL model in place per an ``INT8QuantizationConfig``; rebuild one from a saved plan."""

from __future__ import annotations

import dataclasses
import os
from collections import defaultdict
from collections.abc import Collection

import torch
from torch import nn
from transformers import PreTrainedModel

from slimvl.config import INT8QuantizationConfig
from slimvl.errors import ModelLoadError
from slimvl.models.hooks import RunCalibration
from slimvl.monitor.machine import machine_info
from slimvl.quant.calibrate import run_calibration
from slimvl.quant.embedding import Int8Embedding, TiedInt8LMHead
from slimvl.quant.fused import fuse_shared_inputs, run_shapes
from slimvl.quant.int8_math import activation_qmax
from slimvl.quant.kernels import KERNELS, ActQuant, usable_kernels
from slimvl.quant.linear import Int8Linear
from slimvl.quant.plan import ModulePlan, QuantPlan
from slimvl.quant.select import select_kernel
from slimvl.quant.smoothquant import migrate_outliers
from slimvl.quant.targets import select_linears

EMBEDDING = "model.language_model.embed_tokens"
LM_HEAD = "lm_head"

Timings = dict[str, dict[str, dict[str, float]]]


def quantize_model(
    model: nn.Module,
    config: INT8QuantizationConfig,
    calibration: RunCalibration | None = None,
    pack: bool = True,
    names: Collection[str] | None = None,
) -> QuantPlan:
    """Quantize ``model`` (a ``Qwen3VLForConditionalGeneration``) in place and return the plan.

    Calibration (``calibration`` runs the calibration requests through the model) is needed for
    ``static`` mode and for SmoothQuant. SmoothQuant folds its factors into the preceding norm (q/k/v
    share ``input_layernorm``, gate/up share ``post_attention_layernorm``, vision qkv/fc1 their block's
    norms) or into ``up_proj`` for ``down_proj``, at no run-time cost; other linears divide their input
    at run time. The tied ``lm_head`` reads the int8 embedding table weight-only, or (unless ``mode`` is
    weight-only) packs its own copy for a W8A8 kernel with per-token activations, whichever measures
    faster at one token; an untied one becomes an ``Int8Linear`` chosen the same way. Kernels are
    measured per layer shape among those computing the recipe's numerics (``kernels.usable_kernels``),
    linears that run stacked (``fused``) at their stacked shape, so they get one kernel;
    vision layers are timed at M=256 only (they never run one row), decoder layers at M=1 then M=256,
    lm_head at M=1 (it sees the last position only). With ``pack`` the kernels' packed weights are
    prepared now (`prepare_kernels`); without, the modules keep their plain int8 weights until they are
    prepared or first run (to be assembled anew first: `slimvl.assemble`). ``names``: only these of
    the selected linears (an adaptive precision plan's int8 units). Linears or tables another section
    already stored in another format are not ``nn.Linear``/``nn.Embedding`` any more and are left alone.
    """
    mode, alpha = config.quantization_mode, config.smoothquant_alpha
    float_bits = _float_bits(mode, config.activation_bits)
    if alpha is not None and mode == "weight_only":
        raise ValueError(
            "smoothquant_alpha: SmoothQuant needs quantized activations (mode 'static' or 'dynamic')"
        )
    targets = select_linears(model, config)
    if names is not None:
        targets = {name: module for name, module in targets.items() if name in names}
    stats = {}
    if targets and (mode == "static" or alpha is not None):
        if calibration is None:
            raise ValueError(f"mode {mode!r} with smoothquant_alpha={alpha} needs calibration requests")
        stats = run_calibration(targets, calibration)
    smoothing = migrate_outliers(model, targets, stats, alpha) if alpha is not None else {}
    timings: Timings = defaultdict(dict)
    plans: dict[str, ModulePlan] = {}
    timed_at = run_shapes({name: (lin.out_features, lin.in_features) for name, lin in targets.items()})
    for name in list(targets):
        linear = targets.pop(name)  # drop our reference: each fp32 weight is freed once replaced
        s, how = smoothing.get(name, (None, None))
        act_range = stats[name].tensor_range(s) if mode == "static" else None
        shape = (linear.out_features, linear.in_features)
        act = _act_quant(mode, config.reduce_range)
        choice = _select(
            timed_at[name], act, _batch_sizes(name), timings, dtype=linear.weight.dtype, float_bits=float_bits
        )
        module = Int8Linear.from_linear(
            linear,
            mode,
            choice,
            smooth=s if how == "runtime" else None,
            act_range=act_range,
            reduce_range=config.reduce_range,
        )
        model.set_submodule(name, module)
        plans[name] = ModulePlan("linear", mode, choice, shape, linear.bias is not None, how, act_range)
    if config.quantize_embeddings and isinstance(model.get_submodule(EMBEDDING), nn.Embedding):
        plans.update(_quantize_embeddings(model, timings, mode, config.reduce_range, float_bits))
    if pack:
        prepare_kernels(model)
    calibration = {
        name: {
            "tokens": st.tokens,
            "absmax": float(st.channel_absmax.max()),
            "abs_percentile": st.abs_percentile,
        }
        for name, st in stats.items()
    }
    return QuantPlan(dataclasses.asdict(config), plans, dict(timings), _machine(), calibration)


def _quantize_embeddings(
    model: nn.Module, timings: Timings, mode: str, reduce_range: bool, float_bits: int
) -> dict[str, ModulePlan]:
    embedding = model.get_submodule(EMBEDDING)
    head = model.get_submodule(LM_HEAD)
    tied = head.weight.data_ptr() == embedding.weight.data_ptr()
    table = Int8Embedding.from_embedding(embedding)
    model.set_submodule(EMBEDDING, table)
    shape = (table.num_embeddings, table.embedding_dim)
    plans = {EMBEDDING: ModulePlan("embedding", "weight_only", None, shape)}
    if tied:
        weight = (table.qweight, table.scale)
        head_mode, kernel = _select_head(shape, timings, mode, reduce_range, float_bits, table.dtype, weight)
        model.set_submodule(LM_HEAD, TiedInt8LMHead(table, kernel, head_mode, reduce_range))
        plans[LM_HEAD] = ModulePlan("lm_head", head_mode, kernel, shape, tied_to=EMBEDDING)
    else:
        head_mode, kernel = _select_head(shape, timings, mode, reduce_range, float_bits, head.weight.dtype)
        new = Int8Linear.from_linear(head, head_mode, kernel, reduce_range=reduce_range)
        model.set_submodule(LM_HEAD, new)
        plans[LM_HEAD] = ModulePlan("linear", head_mode, kernel, shape, head.bias is not None)
    return plans


def _select_head(
    shape: tuple[int, int],
    timings: Timings,
    mode: str,
    reduce_range: bool,
    float_bits: int,
    dtype: torch.dtype,
    weight: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[str, str]:
    """(mode, kernel) of ``lm_head``: the faster at one token of a weight-only kernel that reads the
    int8 weight in place and, unless activations must stay in float, a W8A8 kernel with its own
    packed copy (per-token activations)."""
    kernel = _select(
        shape, None, (1,), timings, copies=False, weight=weight, dtype=dtype, float_bits=float_bits
    )
    options = {"weight_only": (kernel, timings[f"weight_only {shape[0]}x{shape[1]}"][kernel]["M=1"])}
    act = _act_quant("dynamic", reduce_range)
    copying = _copying_kernels(shape, act)
    if mode != "weight_only" and copying:
        kernel = _select(shape, act, (1,), timings, dtype=dtype, candidates=copying)
        options["dynamic"] = (kernel, timings[f"dynamic {shape[0]}x{shape[1]}"][kernel]["M=1"])

    best = min(options, key=lambda head_mode: options[head_mode][1])
    return best, options[best][0]


def build_quantized_skeleton(model: nn.Module, plan: QuantPlan) -> QuantPlan:
    """Swap EMPTY quantized modules into the unquantized ``model`` (typically built on the meta
    device) per ``plan``, ready for ``load_quantized_state_dict``; no float weight is materialized.

    A planned kernel this machine lacks is replaced by one measured here. Returns the plan actually
    applied: kernels as used, and where something was measured here, those timings merged in and
    this machine's description.
    """
    if isinstance(model, PreTrainedModel) and isinstance(model.get_input_embeddings(), nn.Embedding):
        model.tie_weights()  # built on meta, a transformers model is untied until asked: keep an fp32 tie
    reduce_range = bool(plan.config.get("reduce_range", True))
    float_bits = _float_bits(plan.config.get("quantization_mode"), plan.config.get("activation_bits", 8))
    timings: Timings = defaultdict(dict)
    applied = {}
    timed_at = run_shapes({name: tuple(mp.shape) for name, mp in plan.modules.items() if mp.kind == "linear"})
    ordered = sorted(plan.modules.items(), key=lambda item: item[1].kind != "embedding")  # tables first
    for name, mp in ordered:
        old = model.get_submodule(name)
        if mp.kind == "linear" and tuple(old.weight.shape) != tuple(mp.shape):
            raise ModelLoadError(
                f"the int8 plan gives '{name}' the shape {list(mp.shape)}, the model {list(old.weight.shape)}"
            )
        device = old.weight.device
        kernel = mp.kernel
        if mp.kind == "embedding":
            new: nn.Module = Int8Embedding(*mp.shape, dtype=old.weight.dtype, device=device)
        elif mp.kind == "lm_head":
            act = _act_quant(mp.mode, reduce_range)
            # a dynamic head packs its own copy; a weight-only one reads the table in place
            usable = (
                _copying_kernels(mp.shape, act)
                if act
                else usable_kernels(mp.shape, None, allow_copies=False, float_bits=float_bits)
            )
            if kernel not in usable:
                kernel = _select(mp.shape, act, (1,), timings, dtype=old.weight.dtype, candidates=usable)
            new = TiedInt8LMHead(model.get_submodule(mp.tied_to), kernel, mp.mode, reduce_range)
        else:
            act = _act_quant(mp.mode, reduce_range)
            if kernel not in usable_kernels(mp.shape, act, float_bits=float_bits):
                kernel = _select(
                    timed_at[name],
                    act,
                    _batch_sizes(name),
                    timings,
                    dtype=old.weight.dtype,
                    float_bits=float_bits,
                )
            out_features, in_features = mp.shape
            new = Int8Linear(
                in_features,
                out_features,
                bias=mp.bias,
                mode=mp.mode,
                kernel=kernel,
                smooth=mp.smooth == "runtime",
                reduce_range=reduce_range,
                device=device,
            )
        model.set_submodule(name, new)
        applied[name] = dataclasses.replace(mp, kernel=kernel)
    if not timings:
        return dataclasses.replace(plan, modules=applied)
    merged = {**plan.kernel_timings, **timings}
    return dataclasses.replace(plan, modules=applied, kernel_timings=merged, machine=_machine())


def load_quantized_state_dict(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> None:
    """``load_state_dict(assign=True, strict=True)`` that accepts a state dict saved without duplicates:
    a key missing because it names the same tensor as another key (a tied table) is filled from it."""
    full = dict(state_dict)
    aliases = defaultdict(list)
    for key, tensor in model.state_dict(keep_vars=True).items():
        aliases[id(tensor)].append(key)
    for keys in aliases.values():
        present = [k for k in keys if k in full]
        for key in keys:
            if present and key not in full:
                full[key] = full[present[0]]
    model.load_state_dict(full, assign=True, strict=True)


def deduplicated_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """``state_dict`` with each stored tensor once (tied tables appear under their first name only)."""
    out, seen = {}, set()
    for key, tensor in model.state_dict().items():
        ident = (
            tensor.untyped_storage().data_ptr(),
            tensor.storage_offset(),
            tuple(tensor.shape),
            tensor.dtype,
        )
        if tensor.device.type != "meta" and ident in seen:
            continue
        seen.add(ident)
        out[key] = tensor
    return out


def prepare_kernels(model: nn.Module) -> None:
    """Pack every quantized module's weight now (releasing plain copies a kernel replaced); linears that
    read one input are stacked into one first (`fused`)."""
    fuse_shared_inputs(model)
    for module in model.modules():
        if isinstance(module, (Int8Linear, TiedInt8LMHead)):
            module.prepare()


def _float_bits(mode: str, activation_bits: int) -> int:
    """The fewest bits a weight-only kernel may keep of float activations: a weight-only recipe's own
    ``activation_bits`` (16 at least: bf16); in a W8A8 recipe (the weight-only option of ``lm_head``)
    32, so that no kernel rounds the numerics the recipe names."""
    return max(activation_bits, 16) if mode == "weight_only" else 32


def _act_quant(mode: str, reduce_range: bool) -> ActQuant | None:
    """The activation quantization kernels are timed with (a static layer's own scale is irrelevant)."""
    if mode == "weight_only":
        return None
    scale = 1 / 64 if mode == "static" else None
    return ActQuant(activation_qmax(reduce_range), scale, 64 if scale else 0)


def _batch_sizes(name: str) -> tuple[int, ...]:
    """Rows a linear is timed at: vision layers never see one row, lm_head only ever one (the last
    position), decoder layers one (decode) then 256 (prefill)."""
    if name.startswith("model.visual."):
        return (256,)
    return (1,) if name == LM_HEAD else (1, 256)


def _copying_kernels(shape: tuple[int, int], act: ActQuant) -> list[str]:
    return [k for k in usable_kernels(shape, act) if KERNELS[k].copies_weight]


def _select(
    shape: tuple[int, int],
    act: ActQuant | None,
    batch_sizes: tuple[int, ...],
    timings: Timings,
    copies: bool = True,
    weight: tuple[torch.Tensor, torch.Tensor] | None = None,
    dtype: torch.dtype = torch.float32,
    candidates: list[str] | None = None,
    float_bits: int = 16,
) -> str:
    candidates = candidates or usable_kernels(shape, act, allow_copies=copies, float_bits=float_bits)
    choice = select_kernel(
        shape, act, candidates, batch_sizes=batch_sizes, dtype=dtype, weight=weight, float_bits=float_bits
    )
    kind = "weight_only" if act is None else act.kind
    timings[f"{kind} {shape[0]}x{shape[1]}"] = {
        kernel: {f"M={m}": round(ms, 4) for m, ms in per_m.items()}
        for kernel, per_m in choice.timings_ms.items()
    }
    return choice.name


def _machine() -> dict:
    info = machine_info()
    info["quantized_engine"] = torch.backends.quantized.engine
    info["int8_kernels_available"] = [name for name, k in KERNELS.items() if k.available()]
    info["env"] = {k: os.environ[k] for k in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA") if k in os.environ}
    return info
