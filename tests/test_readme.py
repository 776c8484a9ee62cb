"""README.md: short, the two make commands first, every `slimvl` command parses with slimvl's own parser,
names only recipes that are built, and its measured tables are as generated from the results.

Running the commands is `scripts/check_readme_commands.sh` (minutes); here nothing heavy runs.
"""

from __future__ import annotations

import argparse
import importlib.util
import re
from pathlib import Path
from types import ModuleType

import pytest

from slimvl.api import missing_optimizations
from slimvl.cli.parser import build_parser
from slimvl.config import PRESET_NAMES, resolve_recipe
from slimvl.models.loader import builtin_names

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
MAX_WORDS = 1500
CLI_VERBS = {"optimize", "run", "bench", "eval", "info"}


def _script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


readme_commands = _script("readme_commands")
TEXT = README.read_text()
COMMANDS = readme_commands.slimvl_commands(TEXT)


def _parse(argv: list[str]) -> argparse.Namespace:
    try:
        return build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse exits on a bad command line (after printing why)
        raise AssertionError(f"`slimvl {' '.join(argv)}` does not parse (exit {exc.code})") from None


def test_readme_is_short():
    words = len(TEXT.split())
    assert words < MAX_WORDS, f"README.md has {words} words; keep it under {MAX_WORDS} (details go to docs/)"


def test_make_demo_and_make_test_come_first():
    head = TEXT.splitlines()[:40]
    for command in ("make demo", "make test"):
        assert any(line.lstrip().startswith(command) for line in head), (
            f"`{command}` not in README's first 40 lines"
        )


def test_readme_avoids_unexplained_jargon():
    for phrase in ("seed setting", "waves"):
        assert phrase not in TEXT.lower(), f"README.md says {phrase!r}"


def test_readme_shows_each_cli_verb():
    assert CLI_VERBS <= {argv[0] for argv in COMMANDS}


@pytest.mark.parametrize("argv", COMMANDS, ids=[" ".join(a) for a in COMMANDS])
def test_readme_command_parses(argv: list[str]):
    args = _parse(argv)
    model = getattr(args, "model", None)
    if model is not None and model.startswith("builtin:"):
        assert model in builtin_names()


def test_readme_recipes_are_built():
    """Every recipe a README command names is a built preset, a recipe file in the repository whose
    optimizations are built, or a directory an earlier README command writes."""
    written: set[str] = set()
    for argv in COMMANDS:
        args = _parse(argv)
        recipes = getattr(args, "recipe", None)
        named = recipes if isinstance(recipes, list) else [recipes]
        for value in [*named, getattr(args, "baseline", None)]:
            if value is None:
                continue
            if value in PRESET_NAMES or (ROOT / value).is_file():
                recipe = resolve_recipe(value if value in PRESET_NAMES else ROOT / value)
                assert not missing_optimizations(recipe), f"`slimvl {' '.join(argv)}`: {value} is not built"
            else:
                assert value.rstrip("/") in written, f"`slimvl {' '.join(argv)}`: recipe {value} is unknown"
        if getattr(args, "output", None) is not None:
            written.add(str(args.output).rstrip("/"))


def test_readme_python_block_compiles():
    blocks = readme_commands.python_blocks(TEXT)
    assert blocks
    for block in blocks:
        compile(block, "README.md", "exec")


def test_readme_shell_lines_are_slimvl_or_make():
    for line in readme_commands.shell_lines(TEXT):
        assert re.match(r"(slimvl|make) ", line), f"README shell line {line!r}: neither slimvl nor make"


def test_readme_links_exist():
    for document in [README, *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", document.read_text()):
            if "://" in target:
                continue
            assert (document.parent / target).exists(), f"{document.name} links to missing {target}"


def test_generated_blocks_are_as_generated():
    """README.md's and docs/'s measured tables are what scripts/readme_table.py makes of their sources."""
    readme_table = _script("readme_table")
    assert "headline" in readme_table.blocks_in(TEXT)
    for document in [README, *sorted((ROOT / "docs").glob("*.md"))]:
        text = document.read_text()
        assert readme_table.regenerate(text, document) == text, (
            f"{document.name}: a generated block differs from its source; run python scripts/readme_table.py"
        )
