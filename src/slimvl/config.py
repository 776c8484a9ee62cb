"""Configuration for slimvl's four optimizations and the recipes that combine them.

Every config validates itself on construction and raises ``ValueError`` with a one-line
message of the form ``Class.field: got <value>, allowed: <what is allowed>``. Configs are
frozen so that a validated config cannot later drift into an invalid state; derive
variants with ``dataclasses.replace`` (which re-runs validation).
"""

from __future__ import annotations

import json
import math
import os
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, ClassVar, NoReturn

import yaml

RECIPE_FORMAT_VERSION = 1

# Bit width of each precision; the order used by AdaptivePrecisionConfig (fp16 and bf16 tie).
PRECISION_BITS: dict[str, int] = {"int8": 8, "fp16": 16, "bf16": 16, "fp32": 32}

_YAML_SUFFIXES = (".yaml", ".yml")
_JSON_SUFFIXES = (".json",)


class _ValidatedConfig:
    """Field checks shared by the config dataclasses; messages name class, field, value and rule."""

    def _fail(self, name: str, allowed: str) -> NoReturn:
        value = getattr(self, name)
        raise ValueError(f"{type(self).__name__}.{name}: got {value!r}, allowed: {allowed}")

    def _check_bool(self, name: str) -> None:
        if not isinstance(getattr(self, name), bool):
            self._fail(name, "True or False")

    def _check_int(self, name: str, minimum: int) -> None:
        value = getattr(self, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            self._fail(name, f"an int >= {minimum}")

    def _check_number(self, name: str, allowed: str, in_range: Callable[[float], bool]) -> None:
        """Check a real number (ints accepted, bools not) and store it as a float."""
        value = getattr(self, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not in_range(value):
            self._fail(name, allowed)
        object.__setattr__(self, name, float(value))

    def _check_choice(self, name: str, choices: tuple[Any, ...]) -> None:
        value = getattr(self, name)
        if type(value) is not type(choices[0]) or value not in choices:
            self._fail(name, f"one of {', '.join(repr(c) for c in choices)}")


@dataclass(frozen=True)
class INT8QuantizationConfig(_ValidatedConfig):
    """INT8 quantization of linear layers.

    ``weight_only`` keeps activations in floating point, which is the only mode where
    ``activation_bits`` of 16 or 32 makes sense; ``static`` and ``dynamic`` quantize
    activations to 8 bits (static from ``calibration_samples`` inputs, dynamic per batch).
    ``smoothquant_alpha`` enables SmoothQuant activation-to-weight scale migration.
    """

    quantization_mode: str = "dynamic"
    activation_bits: int = 8
    weight_bits: int = 8
    quantize_embeddings: bool = True
    quantize_attention: bool = True
    quantize_mlp: bool = True
    quantize_vision: bool = True
    smoothquant_alpha: float | None = None
    calibration_samples: int = 32
    reduce_range: bool = True

    QUANTIZATION_MODES: ClassVar[tuple[str, ...]] = ("static", "dynamic", "weight_only")

    def __post_init__(self) -> None:
        self._check_choice("quantization_mode", self.QUANTIZATION_MODES)
        self._check_choice("weight_bits", (8,))
        self._check_choice("activation_bits", (8, 16, 32))
        if self.quantization_mode != "weight_only" and self.activation_bits != 8:
            self._fail(
                "activation_bits",
                f"8 when quantization_mode is {self.quantization_mode!r} (16 and 32 only with 'weight_only')",
            )
        for name in (
            "quantize_embeddings",
            "quantize_attention",
            "quantize_mlp",
            "quantize_vision",
            "reduce_range",
        ):
            self._check_bool(name)
        if self.smoothquant_alpha is not None:
            self._check_number("smoothquant_alpha", "None or a number in [0, 1]", lambda v: 0 <= v <= 1)
        self._check_int("calibration_samples", 1)


@dataclass(frozen=True)
class SparsificationConfig(_ValidatedConfig):
    """Visual token sparsification: drop the least useful visual tokens before the decoder.

    ``scorer`` picks how tokens are ranked: ``"text_guided"`` uses the cosine similarity of
    question-token embeddings and visual tokens before the decoder; ``"attention"`` uses the
    text-to-visual attention in decoder layer ``score_layer``. ``sparsity_method`` picks
    which tokens survive: the ``top_k`` scored, a ``random`` subset (seeded by ``seed``), or
    a uniform spatial ``grid``.
    """

    sparsity_ratio: float = 0.6
    sparsity_method: str = "top_k"
    min_tokens_per_image: int = 32
    max_tokens_per_image: int = 128
    scorer: str = "text_guided"
    score_layer: int = 2
    seed: int = 0

    SPARSITY_METHODS: ClassVar[tuple[str, ...]] = ("top_k", "random", "grid")
    SCORERS: ClassVar[tuple[str, ...]] = ("text_guided", "attention")

    def __post_init__(self) -> None:
        self._check_number("sparsity_ratio", "a number in [0, 1)", lambda v: 0 <= v < 1)
        self._check_choice("sparsity_method", self.SPARSITY_METHODS)
        self._check_int("min_tokens_per_image", 1)
        self._check_int("max_tokens_per_image", 1)
        if self.max_tokens_per_image < self.min_tokens_per_image:
            self._fail(
                "max_tokens_per_image",
                f"an int >= min_tokens_per_image ({self.min_tokens_per_image})",
            )
        self._check_choice("scorer", self.SCORERS)
        self._check_int("score_layer", 0)
        self._check_int("seed", 0)

    def tokens_to_keep(self, n_visual: int) -> int:
        """Number of the ``n_visual`` tokens of one image to keep.

        ``round((1 - sparsity_ratio) * n_visual)`` clamped to
        ``[min_tokens_per_image, max_tokens_per_image]`` and never more than ``n_visual``.
        A ratio of 0 disables sparsification, so all tokens are kept regardless of the max.
        """
        if isinstance(n_visual, bool) or not isinstance(n_visual, int) or n_visual < 0:
            raise ValueError(f"tokens_to_keep.n_visual: got {n_visual!r}, allowed: an int >= 0")
        if self.sparsity_ratio == 0:
            return n_visual
        keep = round((1 - self.sparsity_ratio) * n_visual)
        keep = max(self.min_tokens_per_image, min(keep, self.max_tokens_per_image))
        return min(keep, n_visual)


@dataclass(frozen=True)
class PruningConfig(_ValidatedConfig):
    """Weight pruning of the language model.

    ``criterion`` ``"wanda"`` scores weights by ``|W| * ||x||`` (Sun et al., 2023) and
    needs calibration activations; ``"magnitude"`` uses ``|W|`` alone. Modules whose
    qualified name contains an entry of ``protected_modules`` are never pruned.
    """

    pruning_ratio: float = 0.3
    pruning_schedule: str = "iterative"
    num_pruning_steps: int = 5
    criterion: str = "wanda"
    structured: bool = False
    protected_modules: tuple[str, ...] = (
        "lm_head",
        "embed_tokens",
        "visual.merger",
        "visual.deepstack_merger_list",
    )
    fine_tune_steps: int = 0

    SCHEDULES: ClassVar[tuple[str, ...]] = ("iterative", "one_shot")
    CRITERIA: ClassVar[tuple[str, ...]] = ("magnitude", "wanda")

    def __post_init__(self) -> None:
        self._check_number("pruning_ratio", "a number in [0, 1)", lambda v: 0 <= v < 1)
        self._check_choice("pruning_schedule", self.SCHEDULES)
        self._check_int("num_pruning_steps", 1)
        self._check_choice("criterion", self.CRITERIA)
        self._check_bool("structured")
        modules = self.protected_modules
        if not isinstance(modules, (list, tuple)) or not all(isinstance(m, str) for m in modules):
            self._fail("protected_modules", "a tuple or list of str")
        object.__setattr__(self, "protected_modules", tuple(modules))
        self._check_int("fine_tune_steps", 0)

    def ratio_at_step(self, step: int) -> float:
        """Cumulative pruning ratio to reach after step ``step`` (1-based) of the schedule.

        ``iterative`` follows the cubic schedule of Zhu & Gupta (2017),
        ``ratio * (1 - (1 - step / n) ** 3)``: prune fast while redundancy is high, then
        slow down. ``one_shot`` reaches the full ratio at every step.
        """
        n = self.num_pruning_steps
        if isinstance(step, bool) or not isinstance(step, int) or not 1 <= step <= n:
            raise ValueError(f"ratio_at_step.step: got {step!r}, allowed: an int in [1, {n}]")
        if self.pruning_schedule == "one_shot":
            return self.pruning_ratio
        return self.pruning_ratio * (1 - (1 - step / n) ** 3)


@dataclass(frozen=True)
class AdaptivePrecisionConfig(_ValidatedConfig):
    """Per-layer precision chosen by sensitivity, within ``[min_precision, max_precision]``.

    Precisions are ordered by bit width: int8 < fp16 == bf16 < fp32. Layers start at
    ``base_precision``; with ``enable_dynamic_precision`` they may be lowered while the
    estimated output error stays within ``sensitivity_budget``, or raised while at least
    ``memory_headroom_mb`` of memory stays free.
    """

    base_precision: str = "fp16"
    enable_dynamic_precision: bool = True
    min_precision: str = "int8"
    max_precision: str = "fp32"
    sensitivity_budget: float = 0.01
    memory_headroom_mb: int = 512

    def __post_init__(self) -> None:
        precisions = tuple(PRECISION_BITS)
        for name in ("base_precision", "min_precision", "max_precision"):
            self._check_choice(name, precisions)
        self._check_bool("enable_dynamic_precision")
        base_bits = PRECISION_BITS[self.base_precision]
        if PRECISION_BITS[self.min_precision] > base_bits:
            self._fail(
                "min_precision",
                f"a precision no wider than base_precision {self.base_precision!r} (int8 < fp16 == bf16 < fp32)",
            )
        if PRECISION_BITS[self.max_precision] < base_bits:
            self._fail(
                "max_precision",
                f"a precision at least as wide as base_precision {self.base_precision!r} "
                "(int8 < fp16 == bf16 < fp32)",
            )
        self._check_number("sensitivity_budget", "a finite number > 0", lambda v: 0 < v < math.inf)
        self._check_int("memory_headroom_mb", 0)


# Recipe section key -> config class. Keys are also the Recipe field names.
SECTIONS: dict[str, type[_ValidatedConfig]] = {
    "int8": INT8QuantizationConfig,
    "sparsification": SparsificationConfig,
    "pruning": PruningConfig,
    "adaptive_precision": AdaptivePrecisionConfig,
}


def _check_keys(data: Mapping[Any, Any], allowed: list[str], where: str) -> None:
    for key in data:
        if key not in allowed:
            raise ValueError(f"unknown key {key!r} in {where} (allowed: {', '.join(allowed)})")


@dataclass(frozen=True)
class Recipe:
    """A named combination of optimizations; a section left as None is not applied."""

    name: str = "custom"
    int8: INT8QuantizationConfig | None = None
    sparsification: SparsificationConfig | None = None
    pruning: PruningConfig | None = None
    adaptive_precision: AdaptivePrecisionConfig | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"Recipe.name: got {self.name!r}, allowed: a non-empty str")
        for key, cls in SECTIONS.items():
            value = getattr(self, key)
            if value is not None and not isinstance(value, cls):
                raise ValueError(f"Recipe.{key}: got {value!r}, allowed: None or a {cls.__name__}")

    @property
    def is_empty(self) -> bool:
        return all(getattr(self, key) is None for key in SECTIONS)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of JSON/YAML-safe types (tuples become lists), with the format version."""
        out: dict[str, Any] = {"version": RECIPE_FORMAT_VERSION, "name": self.name}
        for key in SECTIONS:
            section = getattr(self, key)
            out[key] = None if section is None else _section_to_dict(section)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Recipe:
        """Build a Recipe from ``to_dict`` output; a missing section or field takes its default."""
        if not isinstance(data, Mapping):
            raise ValueError(f"recipe: got {type(data).__name__}, allowed: a mapping")
        _check_keys(data, ["version", "name", *SECTIONS], "recipe")
        version = data.get("version", RECIPE_FORMAT_VERSION)
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise ValueError(f"recipe.version: got {version!r}, allowed: an int >= 1")
        if version > RECIPE_FORMAT_VERSION:
            raise ValueError(
                f"recipe.version: got {version}, allowed: <= {RECIPE_FORMAT_VERSION} "
                "(recipe written by a newer slimvl; upgrade slimvl)"
            )
        sections: dict[str, Any] = {}
        for key, section_cls in SECTIONS.items():
            section = data.get(key)
            if section is None:
                continue
            if not isinstance(section, Mapping):
                raise ValueError(f"recipe.{key}: got {section!r}, allowed: a mapping or null")
            _check_keys(section, [f.name for f in fields(section_cls)], f"recipe section {key!r}")
            sections[key] = section_cls(**section)
        return cls(name=data.get("name", "custom"), **sections)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_yaml(cls, text: str, source: str = "<yaml>") -> Recipe:
        """Parse a YAML recipe; ``source`` names the file in error messages."""
        return cls._from_text(text, source, _parse_yaml)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str, source: str = "<json>") -> Recipe:
        """Parse a JSON recipe; ``source`` names the file in error messages."""
        return cls._from_text(text, source, _parse_json)

    @classmethod
    def _from_text(cls, text: str, source: str, parse: Callable[[str], Any]) -> Recipe:
        try:
            data = parse(text)
        except ValueError as exc:
            raise ValueError(f"{source}: {exc}") from None
        if not isinstance(data, Mapping):
            raise ValueError(f"{source}: expected a mapping at top level, got {type(data).__name__}")
        try:
            return cls.from_dict(data)
        except ValueError as exc:
            raise ValueError(f"{source}: {exc}") from None

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write as YAML or JSON (by suffix), atomically: readers never see a partial file."""
        path = Path(path)
        text = self.to_json() if _format_of(path) == "json" else self.to_yaml()
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            with open(tmp, "x", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Recipe:
        path = Path(path)
        fmt = _format_of(path)
        text = path.read_text(encoding="utf-8")
        return cls.from_json(text, str(path)) if fmt == "json" else cls.from_yaml(text, str(path))


def _section_to_dict(section: Any) -> dict[str, Any]:
    out = {}
    for f in fields(section):
        value = getattr(section, f.name)
        out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


def _format_of(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in _YAML_SUFFIXES:
        return "yaml"
    if suffix in _JSON_SUFFIXES:
        return "json"
    allowed = ", ".join(_YAML_SUFFIXES + _JSON_SUFFIXES)
    raise ValueError(f"recipe file {str(path)!r}: got suffix {suffix!r}, allowed: {allowed}")


def _parse_yaml(text: str) -> Any:
    """``yaml.safe_load`` with errors turned into a one-line ValueError."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ValueError(f"invalid YAML{where}: {' '.join(str(problem).split())}") from None


def _parse_json(text: str) -> Any:
    """``json.loads`` with errors turned into a one-line ValueError."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None


# The seed's values. Static vs dynamic quantization is to be measured; the benchmark decides
# the default. Until then the presets use "dynamic", which needs no calibration data.
def _seed_int8() -> INT8QuantizationConfig:
    return INT8QuantizationConfig(
        quantization_mode="dynamic",
        activation_bits=8,
        weight_bits=8,
        quantize_embeddings=True,
        quantize_attention=True,
        quantize_mlp=True,
    )


def _seed_sparsification() -> SparsificationConfig:
    return SparsificationConfig(
        sparsity_ratio=0.6, sparsity_method="top_k", min_tokens_per_image=32, max_tokens_per_image=128
    )


def _seed_pruning() -> PruningConfig:
    return PruningConfig(pruning_ratio=0.3, pruning_schedule="iterative", num_pruning_steps=5)


def _seed_adaptive_precision() -> AdaptivePrecisionConfig:
    return AdaptivePrecisionConfig(
        base_precision="fp16", enable_dynamic_precision=True, min_precision="int8", max_precision="fp32"
    )


_PRESETS: dict[str, Callable[[], Recipe]] = {
    "none": lambda: Recipe(name="none"),
    "laptop": lambda: Recipe(
        name="laptop",
        int8=_seed_int8(),
        sparsification=_seed_sparsification(),
        pruning=_seed_pruning(),
        adaptive_precision=_seed_adaptive_precision(),
    ),
    "int8": lambda: Recipe(name="int8", int8=_seed_int8()),
    "sparsify": lambda: Recipe(name="sparsify", sparsification=_seed_sparsification()),
    "prune": lambda: Recipe(name="prune", pruning=_seed_pruning()),
    "adaptive": lambda: Recipe(name="adaptive", adaptive_precision=_seed_adaptive_precision()),
}

PRESET_NAMES: tuple[str, ...] = tuple(_PRESETS)


def preset(name: str) -> Recipe:
    """The built-in recipe ``name``, one of ``PRESET_NAMES``."""
    if name not in _PRESETS:
        raise ValueError(f"preset: got {name!r}, allowed: {', '.join(PRESET_NAMES)}")
    return _PRESETS[name]()


def resolve_recipe(name_or_path: str | os.PathLike[str] | Recipe | None) -> Recipe:
    """Turn a Recipe, None (no optimization), a preset name or a recipe file path into a Recipe."""
    if isinstance(name_or_path, Recipe):
        return name_or_path
    if name_or_path is None:
        return preset("none")
    if isinstance(name_or_path, str) and name_or_path in _PRESETS:
        return preset(name_or_path)
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise TypeError(
            f"resolve_recipe: got {type(name_or_path).__name__}, allowed: str, path, Recipe or None"
        )
    if Path(name_or_path).is_file():
        return Recipe.load(name_or_path)
    raise ValueError(
        f"unknown recipe {str(name_or_path)!r}: not a preset (allowed: {', '.join(PRESET_NAMES)}) and no such file"
    )
