#!/usr/bin/env bash
# The virtualenv of the OpenVINO GenAI peers of `slimvl bench` (openvino-int8, openvino-int4).
#
# It is separate from slimvl's: optimum-intel 2.2 exports Qwen3-VL only with transformers <= 5.0, while
# slimvl pins a newer one. optimum-intel declares torchvision, which has no build beside torch 2.13 here,
# so optimum-intel itself is installed without dependencies and its other requirements are listed below.
#
#   scripts/setup_openvino.sh              # creates .venv-openvino in the checkout
#   SLIMVL_OPENVINO_VENV=/path scripts/setup_openvino.sh
set -euo pipefail

cd "$(dirname "$0")/.."
VENV="${SLIMVL_OPENVINO_VENV:-.venv-openvino}"
PYTHON="${PYTHON:-python3}"

"$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --quiet)
"${PIP[@]}" --upgrade pip
"${PIP[@]}" "torch>=2.13,<2.14"  # the same CPU build as slimvl's own .venv
"${PIP[@]}" \
    "openvino==2026.4.1" \
    "openvino-tokenizers==2026.4.1.0" \
    "openvino-genai==2026.4.1.0" \
    "nncf>=3.3,<3.5" \
    "optimum~=2.3.0" \
    "transformers>=4.57,<5.1" \
    "huggingface-hub>=0.23.2,<1.22" \
    "requests>=2.33,<3" \
    setuptools accelerate pillow numpy
"${PIP[@]}" --no-deps "optimum-intel==2.2.0"
"$VENV/bin/python" -c "import openvino_genai, optimum.intel; print('openvino', openvino_genai.__version__)"
echo "OpenVINO peers ready in $VENV: slimvl bench MODEL --peers openvino-int8,openvino-int4"
