"""Recipes: the four configs bundled, versioned, round-tripping through YAML and JSON; presets."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

import yaml

from slimvl.atomic import write_text_atomic
from slimvl.config.sections import (
    RECIPE_FORMAT_VERSION,
    AdaptivePrecisionConfig,
    INT8QuantizationConfig,
    PruningConfig,
    SparsificationConfig,
    sections,
)

_YAML_SUFFIXES = (".yaml", ".yml")
_JSON_SUFFIXES = (".json",)


def _check_keys(data: Mapping[Any, Any], allowed: list[str], where: str) -> None:
    for key in data:
        if key not in allowed:
            raise ValueError(f"unknown key {key!r} in {where} (allowed: {', '.join(allowed)})")


class Recipe:
    """A named combination of optimizations: at most one config per registered section (see
    `slimvl.config.sections`), each read as an attribute named after its key (``recipe.int8``; None
    when absent). Immutable; two recipes with the same name and configs are equal."""

    __slots__ = ("_configs", "name")

    def __init__(self, name: str = "custom", **configs: Any) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"Recipe.name: got {name!r}, allowed: a non-empty str")
        known = {s.key: s for s in sections()}
        checked = {}
        for key, value in configs.items():
            if key not in known:
                raise ValueError(f"Recipe: unknown section {key!r} (allowed: {', '.join(known)})")
            if value is not None and not isinstance(value, known[key].config):
                raise ValueError(
                    f"Recipe.{key}: got {value!r}, allowed: None or a {known[key].config.__name__}"
                )
            if value is not None:
                checked[key] = value
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "_configs", checked)

    def __getattr__(self, key: str) -> Any:
        if key.startswith("_") or key not in {s.key for s in sections()}:
            raise AttributeError(f"'Recipe' has no attribute {key!r}")
        return self._configs.get(key)

    def __setattr__(self, key: str, value: Any) -> None:
        raise AttributeError("Recipe is immutable: build a new one (see `renamed`)")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Recipe):
            return NotImplemented
        return (self.name, self._configs) == (other.name, other._configs)

    def __hash__(self) -> int:
        return hash((self.name, tuple(sorted(self._configs.items()))))

    def __repr__(self) -> str:
        parts = [f"name={self.name!r}", *(f"{key}={config!r}" for key, config in self.configs())]
        return f"Recipe({', '.join(parts)})"

    def configs(self) -> list[tuple[str, Any]]:
        """(section key, config) of each section the recipe has, in the order they are applied."""
        return [(s.key, self._configs[s.key]) for s in sections() if s.key in self._configs]

    def renamed(self, name: str) -> Recipe:
        return Recipe(name, **self._configs)

    @property
    def is_empty(self) -> bool:
        return not self._configs

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of JSON/YAML-safe types (tuples become lists), with the format version."""
        out: dict[str, Any] = {"version": RECIPE_FORMAT_VERSION, "name": self.name}
        for section in sections():
            config = self._configs.get(section.key)
            out[section.key] = None if config is None else _section_to_dict(config)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Recipe:
        """Build a Recipe from ``to_dict`` output; a missing section or field takes its default."""
        if not isinstance(data, Mapping):
            raise ValueError(f"recipe: got {type(data).__name__}, allowed: a mapping")
        _check_keys(data, ["version", "name", *(s.key for s in sections())], "recipe")
        version = data.get("version", RECIPE_FORMAT_VERSION)
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise ValueError(f"recipe.version: got {version!r}, allowed: an int >= 1")
        if version > RECIPE_FORMAT_VERSION:
            raise ValueError(
                f"recipe.version: got {version}, allowed: <= {RECIPE_FORMAT_VERSION} "
                "(recipe written by a newer slimvl; upgrade slimvl)"
            )
        configs: dict[str, Any] = {}
        for registered in sections():
            key, section = registered.key, data.get(registered.key)
            if section is None:
                continue
            if not isinstance(section, Mapping):
                raise ValueError(f"recipe.{key}: got {section!r}, allowed: a mapping or null")
            _check_keys(section, [f.name for f in fields(registered.config)], f"recipe section {key!r}")
            configs[key] = registered.config(**section)
        return cls(name=data.get("name", "custom"), **configs)

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
        write_text_atomic(path, text)

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


# The presets' values (the settings slimvl was specified with). Static vs dynamic quantization is to be measured; the benchmark decides
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


# `laptop` composes the four where each buys speed or memory on a CPU (measured: docs/benchmarks.md):
# the seed's unstructured pruning buys neither, so whole MLP channels go (Wanda scores, one pass over 16
# calibration requests); the seed's fp16/fp32 precisions run slower than int8 here, so the decoder and
# the tied table are int4 (a uniform plan: no sensitivity pass; it measured faster than llama.cpp's
# int4/int8 mix at the same accuracy on builtin:tiny), the vision tower int8.
def _laptop_pruning() -> PruningConfig:
    return PruningConfig(
        pruning_ratio=0.3,
        structured=True,
        criterion="wanda",
        pruning_schedule="one_shot",
        calibration_samples=16,
    )


def _laptop_precision() -> AdaptivePrecisionConfig:
    return AdaptivePrecisionConfig(
        base_precision="int8",
        min_precision="int4",
        max_precision="int8",
        plan="uniform",
        vision_precision="int8",
        enable_dynamic_precision=True,
    )


_PRESETS: dict[str, Callable[[], Recipe]] = {
    "none": lambda: Recipe(name="none"),
    "laptop": lambda: Recipe(
        name="laptop",
        int8=_seed_int8(),
        sparsification=_seed_sparsification(),
        pruning=_laptop_pruning(),
        adaptive_precision=_laptop_precision(),
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
