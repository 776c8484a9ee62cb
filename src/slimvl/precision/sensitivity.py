"""Sensitivity: how far each unit alone, put in a lower format, moves the model's next-token
distribution — the mean KL divergence from the unchanged model's first answer token over the
calibration requests (run through the calibration runner, prefill only)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from slimvl.models.hooks import RequestHooks, RunCalibration, StopRequest
from slimvl.models.steps import VisualFeatures
from slimvl.precision.convert import swap_in
from slimvl.precision.units import LM_HEAD, Unit


class _ReusedVision(RequestHooks):
    """The vision encoder's output of each request, computed once and served again while only decoder
    units change (requests run in the same order every time)."""

    def __init__(self) -> None:
        self.outputs: list[VisualFeatures | None] = []
        self.reuse = False
        self.index = 0

    def encode_images(self, model, inputs, stage):
        if self.reuse:
            out = self.outputs[self.index]
        else:
            out = super().encode_images(model, inputs, stage)
            if len(self.outputs) <= self.index:
                self.outputs.append(out)
        self.index += 1
        return out


def _first_token_logprobs(model: nn.Module, run: RunCalibration, hooks: _ReusedVision) -> list[torch.Tensor]:
    """Each calibration request's log-probabilities of its first answer token."""
    out: list[torch.Tensor] = []

    def capture(module: nn.Module, args: tuple, kwargs: dict) -> None:
        logits = module.forward(*args, **kwargs)  # not module(...): that would run this pre-hook again
        out.append(F.log_softmax(logits[0, -1].float(), dim=-1))
        raise StopRequest

    hooks.index = 0
    run({model.get_submodule(LM_HEAD): capture}, hooks)
    return out


def measure(
    model: nn.Module,
    units: list[Unit],
    formats: Callable[[Unit], list[str]],
    run: RunCalibration,
    progress: Callable[[str], None] | None = None,
) -> dict[str, dict[str, float]]:
    """unit name -> format -> mean KL(reference ‖ unit in that format) in nats, for each format
    ``formats(unit)`` gives (fp32, the reference itself, is 0 and not run)."""
    hooks = _ReusedVision()
    reference = _first_token_logprobs(model, run, hooks)
    result: dict[str, dict[str, float]] = {}
    for unit in units:
        result[unit.name] = {}
        hooks.reuse = unit.role not in ("vision_attn", "vision_mlp", "merger")
        for fmt in formats(unit):
            if fmt == "fp32":
                result[unit.name][fmt] = 0.0
                continue
            undo = swap_in(model, unit, fmt)
            try:
                changed = _first_token_logprobs(model, run, hooks)
            finally:
                undo()
            result[unit.name][fmt] = float(
                torch.stack(
                    [
                        F.kl_div(c, r, log_target=True, reduction="sum")
                        for r, c in zip(reference, changed, strict=True)
                    ]
                ).mean()
            )
            if progress is not None:
                progress(f"{unit.name} {fmt}: KL {result[unit.name][fmt]:.3g}")
    return result
