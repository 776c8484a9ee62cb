#!/usr/bin/env bash
# Run every command of README.md on builtin models, to check that none fails.
#
#   scripts/check_readme_commands.sh            # all of them (the builtin:2b-shape ones take minutes each)
#   scripts/check_readme_commands.sh --quick    # skip builtin:*-shape commands; checkpoints -> builtin:tiny
#   scripts/check_readme_commands.sh --make     # also `make demo` and `make test`
#
# Commands on builtins run as written; a checkpoint path stands in as a builtin, images as generated
# pictures, outputs as paths in a temporary directory (scripts/readme_commands.py says how). Then the
# README's Python block runs the same way. Not part of `make test` (tests/test_readme.py checks that each
# command parses); meant for people and the benchmark machines. SLIMVL and PYTHON override the
# executables (default .venv/bin/slimvl and .venv/bin/python).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
export PYTHON
exec "$PYTHON" scripts/readme_commands.py run "$@"
