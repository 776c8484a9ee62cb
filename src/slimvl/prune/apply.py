"""Prune a Qwen3-VL model's decoder linears per a `PruningConfig`: the criterion, the schedule (each
step re-collects the statistics on the model as pruned so far, layer by layer: `layerwise`), the
protected modules, and the record of what was pruned.

Unstructured, the pruned weights become zeros in dense tensors, which dense kernels multiply as fast as
any other number; structured, whole MLP channels (`structured`), decoder head groups (`heads`) and
decoder layers (`layer_removal`) leave and the matrices shrink.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import Qwen3VLForConditionalGeneration

from slimvl.config import PruningConfig
from slimvl.models.hooks import InputObserver, RunCalibration
from slimvl.prune.criteria import InputHessian, InputNorms, magnitude_scores, wanda_scores
from slimvl.prune.heads import DECODER_ATTENTION, group_scores, keep_groups, kv_groups
from slimvl.prune.layer_removal import BlockInfluence, deepstack_fed_layers, layers_to_remove, remove_layers
from slimvl.prune.layerwise import first_layer_inputs, prune_layer_by_layer
from slimvl.prune.masks import row_mask, sparsity
from slimvl.prune.sparsegpt import sparsegpt_prune
from slimvl.prune.structured import (
    MLP_LINEARS,
    channel_scores,
    keep_channels,
    kept_width,
    prunable_modules,
    split_protected,
    width,
)

DECODER = "model.language_model.layers"

# criterion -> the input statistic it needs (None: none)
STATISTIC: dict[str, type | None] = {"magnitude": None, "wanda": InputNorms, "sparsegpt": InputHessian}


def check_protected(model: nn.Module, protected: tuple[str, ...]) -> None:
    """Raises ValueError naming `protected_modules` for an entry that matches no module of the model."""
    names = [name for name, _ in model.named_modules()]
    unmatched = [entry for entry in protected if not any(entry in name for name in names)]
    if unmatched:
        raise ValueError(f"PruningConfig.protected_modules: {unmatched[0]!r} matches no module of this model")


def prunable_linears(model: nn.Module, protected: tuple[str, ...]) -> tuple[dict[str, nn.Linear], list[str]]:
    """The decoder's linears that may be pruned, and those a `protected` entry names (kept whole)."""
    check_protected(model, protected)
    decoder = (
        (name, m)
        for name, m in model.named_modules()
        if isinstance(m, nn.Linear) and name.startswith(DECODER + ".")
    )
    return split_protected(decoder, protected)


def _prune_weight(
    linear: nn.Linear, criterion: str, statistic: object, ratio: float, already: torch.Tensor | None
) -> torch.Tensor:
    """Prune `linear` in place to `ratio` per row; returns its mask."""
    weight = linear.weight
    if criterion == "sparsegpt":
        pruned, mask = sparsegpt_prune(weight, statistic.hessian, ratio, already)
        weight.copy_(pruned)
        return mask
    scores = (
        magnitude_scores(weight) if criterion == "magnitude" else wanda_scores(weight, statistic.sq_norms)
    )
    mask = row_mask(scores, ratio, already)
    weight.masked_fill_(mask, 0)
    return mask


def prune_model(
    model: Qwen3VLForConditionalGeneration,
    config: PruningConfig,
    calibration: RunCalibration | None = None,
) -> dict:
    """Prune `model` in place per `config` and return the plan (JSON-ready): criterion, schedule, the
    ratio reached at each step, the protected linears, and each pruned linear's shape and sparsity.

    `calibration` runs the calibration requests (needed by every criterion but magnitude).
    """
    if config.structured:
        return prune_structured(model, config, calibration)
    statistic = STATISTIC[config.criterion]
    if statistic is not None and calibration is None:
        raise ValueError(f"PruningConfig.criterion: {config.criterion!r} needs calibration requests")
    linears, protected = prunable_linears(model, config.protected_modules)
    owner = {module: name for name, module in linears.items()}
    masks: dict[str, torch.Tensor] = {}
    steps = config.num_pruning_steps if config.pruning_schedule == "iterative" else 1
    reached = []
    for step in range(1, steps + 1):
        ratio = config.ratio_at_step(step)

        def prune_layer(_index: int, layer: nn.Module, ratio: float = ratio):
            mine = {m: owner[m] for m in layer.modules() if m in owner}
            stats = {m: statistic(m.in_features) for m in mine} if statistic else {}
            observers = {m: _feeding(s) for m, s in stats.items()}

            def finish() -> None:
                for module, name in mine.items():
                    masks[name] = _prune_weight(
                        module, config.criterion, stats.get(module), ratio, masks.get(name)
                    )

            return observers, finish

        with torch.no_grad():
            if statistic is None:
                for index, layer in enumerate(model.model.language_model.layers):
                    prune_layer(index, layer)[1]()
            else:
                prune_layer_by_layer(model, first_layer_inputs(calibration, model), prune_layer)
        reached.append(round(ratio, 6))
    return {
        "criterion": config.criterion,
        "schedule": config.pruning_schedule,
        "ratios": reached,
        "protected": protected,
        "layers": {
            name: {"shape": list(linear.weight.shape), "sparsity": round(sparsity(linear.weight), 6)}
            for name, linear in linears.items()
        },
    }


def prune_structured(
    model: Qwen3VLForConditionalGeneration, config: PruningConfig, calibration: RunCalibration | None
) -> dict:
    """Structured: first the `layers_removed` decoder layers of least block influence leave
    (`layer_removal`), then MLP channels (`structured`) and decoder head groups (`heads`) go, each step
    re-scoring on the model shrunk so far. Returns the plan: removed layers (original indices, with every
    layer's influence), each MLP's and attention's width (original, kept) under the names after removal."""
    if config.criterion == "sparsegpt":
        raise ValueError(
            "PruningConfig.criterion: got 'sparsegpt', allowed with structured: 'wanda', 'magnitude' "
            "(SparseGPT removes single weights)"
        )
    if config.criterion == "wanda" and calibration is None:
        raise ValueError("PruningConfig.criterion: 'wanda' needs calibration requests")
    if config.layers_removed and calibration is None:
        raise ValueError("PruningConfig.layers_removed: block influence needs calibration requests")
    check_protected(model, config.protected_modules)
    plan: dict = {"structured": True, "criterion": config.criterion, "schedule": config.pruning_schedule}
    if config.layers_removed:
        plan.update(_remove_layers(model, config.layers_removed, calibration))
    mlps, protected = prunable_modules(model, MLP_LINEARS, config.protected_modules)
    attentions, protected_attentions = prunable_modules(model, (DECODER_ATTENTION,), config.protected_modules)
    channels = {name: width(mlp) for name, mlp in mlps.items()}
    groups = {name: kv_groups(attn) for name, attn in attentions.items()}
    for name in channels:
        kept_width(channels[name], config.pruning_ratio)
    for name in groups:
        kept_width(groups[name], config.head_ratio, "head_ratio", "key/value heads of a layer")
    steps = config.num_pruning_steps if config.pruning_schedule == "iterative" else 1
    reached = []
    for step in range(1, steps + 1):
        fraction = config.schedule_fraction(step)
        channel_norms, head_norms = {}, {}
        if config.criterion == "wanda":
            channel_norms = {name: InputNorms(width(mlp)) for name, mlp in mlps.items()}
            head_norms = {name: InputNorms(attn.o_proj.in_features) for name, attn in attentions.items()}
            observers = {_reader(mlps[name]): _feeding(s) for name, s in channel_norms.items()}
            observers |= {attentions[name].o_proj: _feeding(s) for name, s in head_norms.items()}
            calibration(observers)
        with torch.no_grad():
            for name, mlp in mlps.items():
                keep = kept_width(channels[name], config.pruning_ratio * fraction)
                if keep < width(mlp):
                    scores = channel_scores(mlp, channel_norms[name].sq_norms if channel_norms else None)
                    keep_channels(mlp, scores.topk(keep).indices.sort().values)
            for name, attn in attentions.items():
                keep = kept_width(groups[name], config.head_ratio * fraction, "head_ratio", "key/value heads")
                if keep < kv_groups(attn):
                    scores = group_scores(attn, head_norms[name].sq_norms if head_norms else None)
                    keep_groups(attn, scores.topk(keep).indices.sort().values)
        reached.append(round(config.pruning_ratio * fraction, 6))
    plan |= {
        "ratios": reached,
        "protected": protected + protected_attentions,
        "widths": {name: [channels[name], width(mlp)] for name, mlp in mlps.items()},
    }
    if config.head_ratio:
        plan["heads"] = {name: [groups[name], kv_groups(attn)] for name, attn in attentions.items()}
    return plan


def _remove_layers(model: Qwen3VLForConditionalGeneration, count: int, calibration: RunCalibration) -> dict:
    """Remove the `count` decoder layers of least block influence; their record for the plan."""
    text = model.model.language_model
    influence = BlockInfluence(len(text.layers))
    with torch.no_grad():
        calibration(influence.observers(text))
    scores = influence.scores()
    removed = layers_to_remove(scores, count, deepstack_fed_layers(model))
    remove_layers(text, removed)
    return {"removed_layers": removed, "block_influence": [round(float(v), 6) for v in scores]}


def _reader(mlp: nn.Module) -> nn.Linear:
    return getattr(mlp, MLP_LINEARS[type(mlp).__name__][1])


def _feeding(statistic: InputNorms | InputHessian) -> InputObserver:
    """An observer that adds a module's input to `statistic`."""
    return lambda _module, args, _kwargs: statistic.add(args[0])
