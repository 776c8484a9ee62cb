"""The `pruning` recipe section: prune the decoder's linears; check the saved plan against the model."""

from __future__ import annotations

from torch import nn

from slimvl.config import PruningConfig
from slimvl.errors import ModelLoadError
from slimvl.models.hooks import Applied, CalibrationRuns
from slimvl.models.loader import LoadedModel
from slimvl.prune.apply import STATISTIC, prune_model


def apply(loaded: LoadedModel, config: PruningConfig, calibration: CalibrationRuns) -> Applied:
    needs_data = STATISTIC[config.criterion] is not None
    run = calibration(config.calibration_samples) if needs_data else None
    return Applied(plan=prune_model(loaded.model, config, run))


def rebuild(model: nn.Module, plan: dict) -> None:
    """Unstructured pruning stores dense tensors: nothing to rebuild, but each pruned layer the plan
    names must exist with the shape it records."""
    for name, record in plan["layers"].items():
        try:
            weight = model.get_submodule(name).weight
        except AttributeError:
            raise ModelLoadError(f"the pruning plan names '{name}', which this model does not have") from None
        if list(weight.shape) != record["shape"]:
            raise ModelLoadError(
                f"the pruning plan gives '{name}' the shape {record['shape']}, the model {list(weight.shape)}"
            )
