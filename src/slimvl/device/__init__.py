"""Running on a GPU: what the machine has (`spec`), what each GPU computes well (`rules`), where each
part of the model goes (`placement`), the formats placed parts run in (`modules`), and moving them
(`dispatch`). `plan_device` puts the first four together for `slimvl.load(..., device=...)`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from transformers import Qwen3VLForConditionalGeneration

from slimvl.device.dispatch import placement_needs
from slimvl.device.placement import Placement, cpu_placement, plan_placement
from slimvl.device.rules import DeviceRules, rules_for
from slimvl.device.spec import CPU, DeviceError, DeviceSpec, choose_device

__all__ = ["DeviceError", "DevicePlan", "plan_device"]


@dataclass(frozen=True)
class DevicePlan:
    spec: DeviceSpec
    rules: DeviceRules | None  # None on the CPU
    placement: Placement
    choice: str  # one line: the device chosen and why

    def to_dict(self) -> dict[str, Any]:
        return {
            "device": self.spec.describe(),
            "choice": self.choice,
            "rules": None if self.rules is None else self.rules.describe(),
            "rule_notes": [] if self.rules is None else list(self.rules.notes),
            "placement": self.placement.to_dict(),
            "placement_text": self.placement.describe(),
        }


def plan_device(
    model: Qwen3VLForConditionalGeneration,
    request: str = "cpu",
    gpu_layers: int | None = None,
    rules_capability: tuple[int, int] | None = None,
    gpus: list[DeviceSpec] | None = None,
) -> DevicePlan:
    """Where `model` runs for `--device request` (`gpus`: the devices to choose from; default the
    machine's), with `rules_capability` forcing another GPU's precision rules (e.g. (6, 1) on a newer
    GPU, to check the Pascal path)."""
    spec, choice = choose_device(request, gpus)
    if spec.kind == "cpu":
        if rules_capability is not None:
            raise DeviceError("--gpu-rules: needs a GPU (--device cuda or auto with one present)")
        layers = len(model.model.language_model.layers)
        return DevicePlan(CPU, None, cpu_placement(layers, gpu_layers), choice)
    rules = rules_for(rules_capability or spec.capability)
    placement = plan_placement(placement_needs(model), spec, gpu_layers)
    if request == "cuda" and not placement.on_gpu and gpu_layers is None:
        raise DeviceError(f"--device cuda: not one decoder layer fits in {spec.describe()}; use --device cpu")
    return DevicePlan(spec, rules, placement, choice)
