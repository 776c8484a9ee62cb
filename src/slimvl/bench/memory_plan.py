"""How much memory a bench row's worker will need at its peak (load + warm-up), estimated before it starts.

The driver keeps as many workers resident together as fit (see `slimvl.bench.driver`): rows whose
estimates do not fit beside the others run in a later wave. Estimates are coarse on purpose (weights at
the dtype the row loads them in, plus a fixed overhead measured per kind on a 2B model); the driver
checks the machine's real available memory before each start, so estimates only decide the grouping.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import torch
from transformers import Qwen3VLForConditionalGeneration

from slimvl.bench.rows import RowSpec
from slimvl.models.builder import config_from_dict, shape_config
from slimvl.models.loader import BUILTIN_PREFIX, read_checkpoint_config, tiny_path
from slimvl.optimized import is_optimized_dir

# Bytes per parameter at the row's peak. torchao quantizes a bf16 model in place (peak: the bf16
# weights); OpenVINO int8 holds int8 weights; a slimvl recipe applied at load starts from fp32.
BYTES_PER_PARAMETER = {"fp32": 4.0, "bf16": 2.0, "int8": 1.0, "int4": 0.6}
# Beyond the weights: activations, caches, libraries. OpenVINO GenAI peaked at 4.7 GB for 2.1 B int8
# parameters on this project's machines.
OVERHEAD_BYTES = {"slimvl": 700e6, "hf": 700e6, "openvino": 2600e6}


@cache
def parameter_count(model: str) -> int:
    """Parameters of a builtin or checkpoint model, counted on the meta device (no weights read)."""
    if model.startswith(BUILTIN_PREFIX):
        name = model[len(BUILTIN_PREFIX) :]
        config = (
            config_from_dict(read_checkpoint_config(tiny_path()))
            if name == "tiny"
            else shape_config(name.removesuffix("-shape"))
        )
    else:
        config = config_from_dict(read_checkpoint_config(Path(model)))
    with torch.device("meta"):
        return sum(p.numel() for p in Qwen3VLForConditionalGeneration(config).parameters())


def estimated_peak_bytes(row: RowSpec) -> int:
    if row.kind == "slimvl" and is_optimized_dir(Path(row.model)):
        stored = sum(f.stat().st_size for f in Path(row.model).iterdir() if f.is_file())
        return int(stored + OVERHEAD_BYTES["slimvl"])
    precision = row.weight_format if row.kind == "openvino" else row.dtype
    return int(BYTES_PER_PARAMETER[precision] * parameter_count(row.model) + OVERHEAD_BYTES[row.kind])
