"""Imports flow one way, downward: a module never imports from a layer above its own."""

from __future__ import annotations

import ast
from pathlib import Path

import slimvl

PACKAGE = Path(slimvl.__file__).parent

# Lowest first. A module may import from its own layer and those below it.
LAYERS: list[set[str]] = [
    {"errors", "atomic", "procfs", "memory", "hugepages", "config", "monitor", "data", "sparse_storage"},
    {"models"},
    {"quant", "sparsify", "prune", "precision", "device"},  # the optimization packages, GPU placement
    {"pipeline", "calibration", "registry", "assemble", "optimized"},
    {"api"},
    {"eval", "train", "bench", "experiments", "demo", "serve", "export"},
    {"cli", "console", "__main__", "__init__"},
]
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}


def _part(module: str) -> str | None:
    """The top-level part of slimvl a dotted module name belongs to (None outside slimvl)."""
    parts = module.split(".")
    return parts[1] if parts[0] == "slimvl" and len(parts) > 1 else None


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_every_part_of_the_package_has_a_layer() -> None:
    parts = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir() if p.suffix == ".py" or p.is_dir()}
    parts -= {"__pycache__"}
    assert parts - set(RANK) == set()


def test_no_module_imports_from_a_layer_above_its_own() -> None:
    upward = []
    for path in PACKAGE.rglob("*.py"):
        own = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
        for name in _imports(path):
            part = _part(name)
            if part in RANK and RANK[part] > RANK[own]:
                upward.append(f"{path.relative_to(PACKAGE)} imports {name}")
    assert upward == []
