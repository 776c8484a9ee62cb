"""``FloatLinear``: a linear whose weight is stored in fp32, fp16 or bf16 and that a precision plan keeps
out of quantization. A 16-bit weight is computed in its own dtype (fast where the CPU has native
16-bit arithmetic) or widened to fp32 in row chunks, whichever the kernel race picked."""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from slimvl.precision.timing import best_ms

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
COMPUTE = ("native", "widen")
_WIDEN_CHUNK_ELEMENTS = 1 << 22


class FloatLinear(nn.Module):
    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        bias: bool,
        fmt: str,
        compute: str = "native",
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        if fmt not in DTYPES:
            raise ValueError(f"FloatLinear.fmt: got {fmt!r}, allowed: {', '.join(DTYPES)}")
        if compute not in COMPUTE:
            raise ValueError(f"FloatLinear.compute: got {compute!r}, allowed: {', '.join(COMPUTE)}")
        self.in_features, self.out_features, self.fmt, self.compute = in_features, out_features, fmt, compute
        self.weight = nn.Parameter(
            torch.empty(out_features, in_features, dtype=DTYPES[fmt], device=device), requires_grad=False
        )
        self.bias = (
            nn.Parameter(torch.empty(out_features, device=device), requires_grad=False) if bias else None
        )

    @classmethod
    def from_linear(cls, linear: nn.Linear, fmt: str, compute: str = "native") -> FloatLinear:
        module = cls(
            linear.in_features,
            linear.out_features,
            bias=linear.bias is not None,
            fmt=fmt,
            compute=compute,
            device="meta",
        )
        module.weight = nn.Parameter(linear.weight.detach().to(DTYPES[fmt]).clone(), requires_grad=False)
        if linear.bias is not None:
            module.bias = nn.Parameter(linear.bias.detach().float().clone(), requires_grad=False)
        return module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        if w.dtype == torch.float32:
            return F.linear(x, w, self.bias)
        if self.compute == "native":
            y = F.linear(x.to(w.dtype), w).to(x.dtype)
        else:
            rows = max(1, _WIDEN_CHUNK_ELEMENTS // w.shape[1])
            xf = x.float()
            y = torch.cat([F.linear(xf, w[i : i + rows].float()) for i in range(0, w.shape[0], rows)], dim=-1)
            y = y.to(x.dtype)
        return y if self.bias is None else y + self.bias.to(y.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, {self.fmt}, {self.compute}"


@functools.cache
def choose_compute(fmt: str, shape: tuple[int, int]) -> tuple[str, dict[str, float]]:
    """Native 16-bit or widened-to-fp32 compute for an (N, K) weight, by time at one row (decode) and
    64 rows, summed (ms, best of 3)."""
    if fmt == "fp32":
        return "native", {}
    n, k = shape
    module = FloatLinear(k, n, bias=False, fmt=fmt, device="cpu")
    module.weight.data.normal_()
    inputs = [torch.randn(rows, k) for rows in (1, 64)]
    timings = {}
    for compute in COMPUTE:
        module.compute = compute
        timings[compute] = round(sum(best_ms(lambda x=x: module(x)) for x in inputs), 4)
    return min(timings, key=timings.get), timings
