"""What arithmetic a CUDA device does well, read from its compute capability: the formats each stored
weight format computes in when its layer is placed on the GPU.

- fp16 arithmetic is fast from sm_53 on, except on sm_61 (GTX 10xx, MX150/MX250: 1/64 of the fp32 rate):
  there fp16 is a storage format only, computed in fp32.
- bf16 arithmetic is native from sm_80 (Ampere) on; before, bf16 weights are widened to fp32.
- int8 weights: `torch._int_mm` (cuBLASLt integer GEMM) runs from sm_75 (Turing) on, for calls of more
  than 16 rows (PyTorch's own limit), with per-token int8 activations; fewer rows (decode), and every
  call on older GPUs, widen the int8 weight to fp32 in the matmul (weight-only: activations stay fp32).
  PyTorch has no int8 matrix kernel for sm_61 (its dp4a instruction is used by no PyTorch op), and
  Triton, which torch.compile would generate one with, no longer supports pre-Volta GPUs.
- int4 weights (slimvl's format) are widened to the compute format per matmul on every GPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

INT_MM_MIN_ROWS = 17  # torch._int_mm on CUDA: the first operand needs more than 16 rows


@dataclass(frozen=True)
class DeviceRules:
    capability: tuple[int, int]
    fp16_native: bool
    bf16_native: bool
    int8_matmul: str  # "int_mm" or "dequantize"
    notes: tuple[str, ...]

    def compute_dtype(self, stored: torch.dtype) -> torch.dtype:
        """The dtype a float weight stored as `stored` is multiplied in."""
        if stored == torch.float16 and self.fp16_native:
            return torch.float16
        if stored == torch.bfloat16 and self.bf16_native:
            return torch.bfloat16
        return torch.float32

    def describe(self) -> str:
        major, minor = self.capability
        return (
            f"sm_{major}{minor} rules: fp16 {'native' if self.fp16_native else 'storage only (fp32 compute)'}, "
            f"bf16 {'native' if self.bf16_native else 'widened to fp32'}, int8 weights "
            + (
                "torch._int_mm above 16 rows, else widened"
                if self.int8_matmul == "int_mm"
                else "widened to fp32"
            )
        )


def rules_for(capability: tuple[int, int]) -> DeviceRules:
    notes = []
    fp16_native = capability >= (5, 3) and capability != (6, 1)
    if capability == (6, 1):
        notes.append("sm_61 computes fp16 at 1/64 of its fp32 rate: fp16 is storage only")
    bf16_native = capability >= (8, 0)
    if capability >= (7, 5):
        int8 = "int_mm"
    else:
        int8 = "dequantize"
        notes.append("no int8 matrix kernel for this GPU in PyTorch: int8 weights widened to fp32 per matmul")
    return DeviceRules(capability, fp16_native, bf16_native, int8, tuple(notes))


def parse_capability(text: str) -> tuple[int, int]:
    """ "6.1" -> (6, 1)."""
    parts = text.strip().split(".")
    if len(parts) != 2 or not all(part.isdigit() for part in parts):
        raise ValueError(f"--gpu-rules: got {text!r}, allowed: MAJOR.MINOR, e.g. 6.1")
    return int(parts[0]), int(parts[1])
