#!/usr/bin/env bash
# The GPU path's figures, on any machine with an NVIDIA GPU (target: under 8 minutes):
#  1. builtin:tiny accuracy on cuda against the CPU, paired (benchmarks/gpu_accuracy.py);
#  2. builtin:2b-shape int8 on cuda: the device's own precision rules, the sm_61 (Pascal) rules forced,
#     and a split with half the decoder layers on the GPU (slimvl bench, 3 runs each).
# Results: benchmarks/results/gpu_<GPU name>/. Needs a Python with a CUDA build of torch 2.13 and
# slimvl's dependencies (see docs/gpu.md): PYTHON=/path/to/python scripts/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH}
"$PYTHON" -c 'import sys, torch; torch.cuda.is_available() or sys.exit(f"gpu_check: no CUDA device visible to this PyTorch {torch.__version__}")'
name=$("$PYTHON" -c 'import re, torch; print(re.sub(r"[^A-Za-z0-9]+", "-", torch.cuda.get_device_name(0)).strip("-"))')
out=benchmarks/results/gpu_$name
mkdir -p "$out"
nvidia-smi --query-gpu=name,compute_cap,memory.total,driver_version --format=csv > "$out/nvidia_smi.csv" || true

"$PYTHON" benchmarks/gpu_accuracy.py --n 1000 --out "$out/tiny_accuracy_cuda.json"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$PYTHON" -m slimvl optimize builtin:2b-shape --recipe int8 -o "$work/2b-int8"
layers=$("$PYTHON" -c 'from slimvl.models.builder import shape_config; print(shape_config("2b").text_config.num_hidden_layers)')
for variant in "own:" "sm61:--gpu-rules 6.1" "half:--gpu-layers $((layers / 2))"; do
  tag=${variant%%:*}
  read -r -a flags <<< "${variant#*:}"
  "$PYTHON" -m slimvl bench builtin:2b-shape --recipe "$work/2b-int8" --device cuda "${flags[@]}" \
    --runs 3 --max-new-tokens 32 --bandwidth-bytes 536870912 \
    --json-out "$out/bench_2b_int8_cuda_$tag.json" --md-out "$out/bench_2b_int8_cuda_$tag.md"
done
echo "gpu_check: results in $out"
