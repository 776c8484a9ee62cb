"""Configuration: the four optimization configs and the recipes that bundle them."""

from slimvl.config.recipe import PRESET_NAMES, Recipe, preset, resolve_recipe
from slimvl.config.sections import (
    PRECISION_BITS,
    RECIPE_FORMAT_VERSION,
    AdaptivePrecisionConfig,
    INT8QuantizationConfig,
    PruningConfig,
    Section,
    SparsificationConfig,
    recipe_section,
    sections,
)

__all__ = [
    "PRECISION_BITS",
    "PRESET_NAMES",
    "RECIPE_FORMAT_VERSION",
    "Section",
    "AdaptivePrecisionConfig",
    "INT8QuantizationConfig",
    "PruningConfig",
    "Recipe",
    "SparsificationConfig",
    "preset",
    "recipe_section",
    "resolve_recipe",
    "sections",
]
