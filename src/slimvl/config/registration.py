"""Registering a recipe section, and the field checks every section's config class shares.

Registering a section is the one place an optimization is named: its recipe key, its config class, the
order in which sections are applied, and the module that applies it (imported by `slimvl.registry` only
when a recipe uses the section; see there for what that module provides). The sections themselves are
the config classes of `slimvl.config.sections`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

RECIPE_FORMAT_VERSION = 1


@dataclass(frozen=True)
class Section:
    key: str  # the recipe key (YAML/JSON) and the Recipe attribute
    config: type  # its config dataclass
    order: int  # sections apply in increasing order: weights are pruned before they are quantized
    handler: str  # module that applies it (`slimvl.registry` describes its functions)


_SECTIONS: dict[str, Section] = {}


def recipe_section(key: str, order: int, handler: str) -> Callable[[type], type]:
    """Register the decorated config class as recipe section `key`."""

    def register(cls: type) -> type:
        if key in _SECTIONS or any(s.order == order for s in _SECTIONS.values()):
            raise ValueError(f"recipe section {key!r} (order {order}) is registered twice")
        _SECTIONS[key] = Section(key, cls, order, handler)
        return cls

    return register


def registered() -> tuple[Section, ...]:
    """Every section registered so far, in the order they are applied."""
    return tuple(sorted(_SECTIONS.values(), key=lambda s: s.order))


class ValidatedConfig:
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
