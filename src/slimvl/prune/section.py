"""The `pruning` recipe section: prune the model's weights, or its channels, heads and layers (and
recover by distillation where asked); rebuild and check the saved plan against the model."""

from __future__ import annotations

from torch import nn

from slimvl.config import PruningConfig
from slimvl.errors import ModelLoadError
from slimvl.models.hooks import Applied, CalibrationRuns
from slimvl.models.loader import LoadedModel
from slimvl.prune.apply import DECODER, STATISTIC, prune_model
from slimvl.prune.heads import resize_groups
from slimvl.prune.layer_removal import remove_layers
from slimvl.prune.recover import ANSWER_TOKENS, distillation_targets, recover
from slimvl.prune.structured import resize_channels


def apply(loaded: LoadedModel, config: PruningConfig, calibration: CalibrationRuns) -> Applied:
    model = loaded.model
    targets = None
    if config.fine_tune_steps:  # the unpruned model's answers, before anything is pruned
        targets = distillation_targets(calibration(config.calibration_samples, ANSWER_TOKENS), model)
    needs_data = STATISTIC[config.criterion] is not None or config.layers_removed > 0
    plan = prune_model(model, config, calibration(config.calibration_samples) if needs_data else None)
    if targets is not None:
        plan["recovery"] = recover(
            model,
            targets,
            _pruned_linears(model, plan),
            config.fine_tune_steps,
            learning_rate=config.fine_tune_learning_rate,
        )
    return Applied(plan=plan)


def _pruned_linears(model: nn.Module, plan: dict) -> dict[str, nn.Linear]:
    """The decoder linears pruning changed, which recovery trains: the pruned ones, or every linear of a
    shrunk decoder MLP or attention (the vision encoder's run once per request, outside training)."""
    if not plan.get("structured"):
        return {name: model.get_submodule(name) for name in plan["layers"]}
    return {
        f"{owner}.{name}": linear
        for owner in [*plan["widths"], *plan.get("heads", {})]
        if owner.startswith(DECODER)
        for name, linear in model.get_submodule(owner).named_children()
        if isinstance(linear, nn.Linear)
    }


def rebuild(model: nn.Module, plan: dict) -> None:
    """Structured: the removed decoder layers leave, then each shrunk MLP and attention gets empty
    linears of its saved width (stored weights of another width are then refused). Unstructured pruning
    stores dense tensors: nothing to rebuild, but each pruned layer the plan names must exist with the
    shape it records."""
    if plan.get("structured"):
        text = model.model.language_model
        removed = plan.get("removed_layers", [])
        if any(not 0 <= i < len(text.layers) for i in removed):
            raise ModelLoadError(
                f"the pruning plan removes decoder layers {removed}; the model has {len(text.layers)}"
            )
        remove_layers(text, removed)
        for name, (_original, channels) in plan["widths"].items():
            resize_channels(_module(model, name), channels)
        for name, (_original, groups) in plan.get("heads", {}).items():
            resize_groups(_module(model, name), groups)
        return
    for name, record in plan["layers"].items():
        weight = _module(model, name).weight
        if list(weight.shape) != record["shape"]:
            raise ModelLoadError(
                f"the pruning plan gives '{name}' the shape {record['shape']}, the model {list(weight.shape)}"
            )


def _module(model: nn.Module, name: str) -> nn.Module:
    try:
        return model.get_submodule(name)
    except AttributeError:
        raise ModelLoadError(f"the pruning plan names '{name}', which this model does not have") from None
