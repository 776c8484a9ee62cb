"""The `pruning` recipe section: prune the decoder's linears (and recover by distillation where asked);
check the saved plan against the model."""

from __future__ import annotations

from torch import nn

from slimvl.config import PruningConfig
from slimvl.errors import ModelLoadError
from slimvl.models.hooks import Applied, CalibrationRuns
from slimvl.models.loader import LoadedModel
from slimvl.prune.apply import DECODER, STATISTIC, prune_model
from slimvl.prune.recover import ANSWER_TOKENS, distillation_targets, recover
from slimvl.prune.structured import resize_empty


def apply(loaded: LoadedModel, config: PruningConfig, calibration: CalibrationRuns) -> Applied:
    model = loaded.model
    targets = None
    if config.fine_tune_steps:  # the unpruned model's answers, before anything is pruned
        targets = distillation_targets(calibration(config.calibration_samples, ANSWER_TOKENS), model)
    needs_data = STATISTIC[config.criterion] is not None
    plan = prune_model(model, config, calibration(config.calibration_samples) if needs_data else None)
    if targets is not None:
        plan["recovery"] = recover(model, targets, _pruned_linears(model, plan), config.fine_tune_steps)
    return Applied(plan=plan)


def _pruned_linears(model: nn.Module, plan: dict) -> dict[str, nn.Linear]:
    """The decoder linears pruning changed, which recovery trains: the pruned ones, or every linear of a
    shrunk decoder MLP (the vision encoder's run once per request, outside training)."""
    if not plan.get("structured"):
        return {name: model.get_submodule(name) for name in plan["layers"]}
    return {
        f"{mlp}.{name}": linear
        for mlp in plan["widths"]
        if mlp.startswith(DECODER)
        for name, linear in model.get_submodule(mlp).named_children()
        if isinstance(linear, nn.Linear)
    }


def rebuild(model: nn.Module, plan: dict) -> None:
    """Structured: each shrunk MLP gets empty linears of its saved width (stored weights of another
    width are then refused). Unstructured pruning stores dense tensors: nothing to rebuild, but each
    pruned layer the plan names must exist with the shape it records."""
    if plan.get("structured"):
        for name, (_original, channels) in plan["widths"].items():
            resize_empty(_module(model, name), channels)
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
