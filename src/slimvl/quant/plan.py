"""``QuantPlan``: what was quantized, how, and with which kernel — the versioned record saved with a model."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

PLAN_FORMAT_VERSION = 1
KINDS = ("linear", "embedding", "lm_head")
SMOOTHING = (None, "folded", "runtime")


@dataclass(frozen=True)
class ModulePlan:
    """One quantized module.

    ``shape``: (out, in) of a linear or lm_head, (vocab, dim) of an embedding. ``smooth``: SmoothQuant
    factors ``"folded"`` into the preceding norm or linear (nothing left at run time) or divided at
    ``"runtime"`` (an ``Int8Linear.smooth`` buffer). ``act_range``: static mode's calibrated input range
    (after smoothing). ``tied_to``: the embedding whose int8 table a tied lm_head reads.
    """

    kind: str
    mode: str
    kernel: str | None
    shape: tuple[int, int]
    bias: bool = False
    smooth: str | None = None
    act_range: tuple[float, float] | None = None
    tied_to: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"ModulePlan.kind: got {self.kind!r}, allowed: {', '.join(KINDS)}")
        if self.smooth not in SMOOTHING:
            raise ValueError(f"ModulePlan.smooth: got {self.smooth!r}, allowed: None, 'folded', 'runtime'")
        if (self.kind == "embedding") != (self.kernel is None):
            raise ValueError(f"ModulePlan.kernel: got {self.kernel!r}, allowed: None exactly for embeddings")
        if (self.mode == "static") != (self.act_range is not None):
            raise ValueError("ModulePlan.act_range: required for mode 'static' and only for it")
        object.__setattr__(self, "shape", tuple(self.shape))
        if self.act_range is not None:
            object.__setattr__(self, "act_range", tuple(self.act_range))


@dataclass
class QuantPlan:
    """The per-module plan, the INT8 config it came from, the kernel timings measured to choose, the
    machine they were measured on (ISA flags, torch build), and per calibrated module its input's
    token count, absmax and high percentile of |x| (absmax ≫ percentile: outliers)."""

    config: dict[str, Any]
    modules: dict[str, ModulePlan]
    kernel_timings: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    machine: dict[str, Any] = field(default_factory=dict)
    calibration: dict[str, dict[str, float]] = field(default_factory=dict)
    version: int = PLAN_FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["modules"] = {name: _module_to_dict(m) for name, m in self.modules.items()}
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> QuantPlan:
        if not isinstance(data, Mapping):
            raise ValueError(f"quant plan: got {type(data).__name__}, allowed: a mapping")
        _check_keys(data, [f.name for f in fields(cls)], "quant plan")
        version = data.get("version")
        if (
            isinstance(version, bool)
            or not isinstance(version, int)
            or not 1 <= version <= PLAN_FORMAT_VERSION
        ):
            raise ValueError(
                f"quant plan version: got {version!r}, allowed: 1..{PLAN_FORMAT_VERSION} "
                "(a newer plan needs a newer slimvl)"
            )
        modules = data.get("modules")
        if not isinstance(modules, Mapping):
            raise ValueError("quant plan: 'modules' must be a mapping of module name to plan")
        allowed = [f.name for f in fields(ModulePlan)]
        parsed = {}
        for name, entry in modules.items():
            if not isinstance(entry, Mapping):
                raise ValueError(f"quant plan module {name!r}: got {entry!r}, allowed: a mapping")
            _check_keys(entry, allowed, f"quant plan module {name!r}")
            parsed[name] = ModulePlan(**entry)
        return cls(
            config=dict(data.get("config") or {}),
            modules=parsed,
            kernel_timings=dict(data.get("kernel_timings") or {}),
            machine=dict(data.get("machine") or {}),
            calibration=dict(data.get("calibration") or {}),
            version=version,
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> QuantPlan:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"quant plan: invalid JSON at line {exc.lineno}: {exc.msg}") from None
        return cls.from_dict(data)


def _module_to_dict(module: ModulePlan) -> dict[str, Any]:
    out = asdict(module)
    out["shape"] = list(module.shape)
    out["act_range"] = None if module.act_range is None else list(module.act_range)
    return out


def _check_keys(data: Mapping[str, Any], allowed: list[str], where: str) -> None:
    unknown = [key for key in data if key not in allowed]
    if unknown:
        raise ValueError(f"unknown key {unknown[0]!r} in {where} (allowed: {', '.join(allowed)})")
