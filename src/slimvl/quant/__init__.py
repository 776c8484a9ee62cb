"""INT8 quantization: per-channel int8 weights, dynamic or calibrated static activations, SmoothQuant
outlier migration, int8 embeddings shared with a tied lm_head, and kernels chosen by measurement."""

from slimvl.quant.apply import (
    build_quantized_skeleton,
    deduplicated_state_dict,
    load_quantized_state_dict,
    prepare_kernels,
    quantize_model,
)
from slimvl.quant.calibrate import ActStats, run_calibration
from slimvl.quant.embedding import Int8Embedding, TiedInt8LMHead
from slimvl.quant.kernels import KERNELS, ActQuant
from slimvl.quant.linear import Int8Linear
from slimvl.quant.plan import ModulePlan, QuantPlan
from slimvl.quant.select import KernelChoice, select_kernel

__all__ = [
    "KERNELS",
    "ActQuant",
    "ActStats",
    "Int8Embedding",
    "Int8Linear",
    "KernelChoice",
    "ModulePlan",
    "QuantPlan",
    "TiedInt8LMHead",
    "build_quantized_skeleton",
    "deduplicated_state_dict",
    "load_quantized_state_dict",
    "prepare_kernels",
    "quantize_model",
    "run_calibration",
    "select_kernel",
]
