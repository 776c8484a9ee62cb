"""Prune a Qwen3-VL model's decoder linears per a `PruningConfig`: the criterion, the schedule (each
step re-collects the statistics on the model as pruned so far, layer by layer: `layerwise`), the
protected modules, and the record of what was pruned.

Unstructured, the pruned weights become zeros in dense tensors, which dense kernels multiply as fast as
any other number; structured, whole MLP channels leave and the matrices shrink (`structured`).
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import Qwen3VLForConditionalGeneration

from slimvl.config import PruningConfig
from slimvl.models.hooks import InputObserver, RunCalibration
from slimvl.prune.criteria import InputHessian, InputNorms, magnitude_scores, wanda_scores
from slimvl.prune.layerwise import first_layer_inputs, prune_layer_by_layer
from slimvl.prune.masks import row_mask, sparsity
from slimvl.prune.sparsegpt import sparsegpt_prune
from slimvl.prune.structured import (
    MLP_LINEARS,
    channel_scores,
    keep_channels,
    kept_width,
    prunable_mlps,
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
    linears, kept = {}, []
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and name.startswith(DECODER + "."):
            if any(entry in name for entry in protected):
                kept.append(name)
            else:
                linears[name] = module
    return linears, kept


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
        return prune_channels(model, config, calibration)
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


def prune_channels(
    model: Qwen3VLForConditionalGeneration, config: PruningConfig, calibration: RunCalibration | None
) -> dict:
    """Structured: remove MLP channels (`slimvl.prune.structured`) of the decoder and the vision
    encoder, each step re-scoring on the model shrunk so far; returns the plan with each MLP's width
    (original, kept)."""
    if config.criterion == "sparsegpt":
        raise ValueError(
            "PruningConfig.criterion: got 'sparsegpt', allowed with structured: 'wanda', 'magnitude' "
            "(SparseGPT removes single weights)"
        )
    if config.criterion == "wanda" and calibration is None:
        raise ValueError("PruningConfig.criterion: 'wanda' needs calibration requests")
    check_protected(model, config.protected_modules)
    mlps, protected = prunable_mlps(model, config.protected_modules)
    original = {name: width(mlp) for name, mlp in mlps.items()}
    for channels in original.values():
        kept_width(channels, config.pruning_ratio)
    steps = config.num_pruning_steps if config.pruning_schedule == "iterative" else 1
    reached = []
    for step in range(1, steps + 1):
        ratio = config.ratio_at_step(step)
        norms = {}
        if config.criterion == "wanda":
            norms = {name: InputNorms(width(mlp)) for name, mlp in mlps.items()}
            calibration({_reader(mlps[name]): _feeding(s) for name, s in norms.items()})
        with torch.no_grad():
            for name, mlp in mlps.items():
                keep = kept_width(original[name], ratio)
                if keep < width(mlp):
                    scores = channel_scores(mlp, norms[name].sq_norms if norms else None)
                    keep_channels(mlp, scores.topk(keep).indices.sort().values)
        reached.append(round(ratio, 6))
    return {
        "structured": True,
        "criterion": config.criterion,
        "schedule": config.pruning_schedule,
        "ratios": reached,
        "protected": protected,
        "widths": {name: [original[name], width(mlp)] for name, mlp in mlps.items()},
    }


def _reader(mlp: nn.Module) -> nn.Linear:
    return getattr(mlp, MLP_LINEARS[type(mlp).__name__][1])


def _feeding(statistic: InputNorms | InputHessian) -> InputObserver:
    """An observer that adds a module's input to `statistic`."""
    return lambda _module, args, _kwargs: statistic.add(args[0])
