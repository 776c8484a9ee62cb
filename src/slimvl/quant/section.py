"""The `int8` recipe section: quantize the model's linears and embeddings; rebuild them from a saved plan."""

from __future__ import annotations

from torch import nn

from slimvl.config import INT8QuantizationConfig
from slimvl.models.hooks import Applied, CalibrationRuns
from slimvl.models.loader import LoadedModel
from slimvl.quant.apply import build_quantized_skeleton, quantize_model
from slimvl.quant.plan import QuantPlan


def apply(loaded: LoadedModel, config: INT8QuantizationConfig, calibration: CalibrationRuns) -> Applied:
    # left unpacked: the model is assembled anew from its plan and tensors, and packed then
    plan = quantize_model(loaded.model, config, calibration(config.calibration_samples), pack=False)
    return Applied(plan=plan.to_dict())


def rebuild(model: nn.Module, plan: dict) -> None:
    build_quantized_skeleton(model, QuantPlan.from_dict(plan))
