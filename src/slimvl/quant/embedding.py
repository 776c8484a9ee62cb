"""An int8 embedding table with per-row scales, and the tied ``lm_head`` that reads the same table."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from slimvl.quant.int8_math import quantize_embedding_per_row
from slimvl.quant.kernels import aligned
from slimvl.quant.linear import check_kernel


class Int8Embedding(nn.Module):
    """Token lookup from an int8 ``qweight`` (V, D) with fp32 per-row ``scale`` (V,).

    Only the looked-up rows are dequantized; the output has the dtype of the table it replaced.
    """

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.num_embeddings, self.embedding_dim, self.dtype = num_embeddings, embedding_dim, dtype
        self.register_buffer(
            "qweight", torch.empty(num_embeddings, embedding_dim, dtype=torch.int8, device=device)
        )
        self.register_buffer("scale", torch.empty(num_embeddings, device=device))

    @classmethod
    def from_embedding(cls, embedding: nn.Embedding) -> Int8Embedding:
        weight = embedding.weight
        module = cls(embedding.num_embeddings, embedding.embedding_dim, dtype=weight.dtype, device="meta")
        module.qweight, module.scale = quantize_embedding_per_row(weight)
        return module

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        rows = F.embedding(ids, self.qweight).to(torch.float32)
        return (rows * self.scale[ids].unsqueeze(-1)).to(self.dtype)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, dtype={self.dtype}"


class TiedInt8LMHead(nn.Module):
    """``logits = x @ (qweight · scale)ᵀ`` over the SAME table as the token embedding.

    Each row of the table is one output channel of ``lm_head``, so its per-row scale is the
    per-output-channel scale: one int8 table serves both, and its bytes exist once. ``table`` is the
    embedding module itself (registered here too, so ``state_dict`` lists its tensors under both
    names, as transformers does for tied weights; they are the same tensors). The kernel must be
    weight-only and must not copy the weight (a packed copy would double the largest table).
    """

    def __init__(self, table: Int8Embedding, kernel: str) -> None:
        super().__init__()
        found = check_kernel(kernel, (table.num_embeddings, table.embedding_dim), weight_only=True)
        if found.copies_weight:
            raise ValueError(
                f"kernel {kernel!r} keeps a packed copy of the weight: not usable for a tied head"
            )
        self.table, self.kernel, self._kernel = table, kernel, found
        self.in_features, self.out_features = table.embedding_dim, table.num_embeddings
        self._state: Any = None
        self._prepared_from: torch.Tensor | None = None

    def prepare(self) -> None:
        """Prepare the kernel on the table (done by the first forward otherwise)."""
        self.table.qweight = aligned(self.table.qweight)  # the kernel reads it in place
        self._state = self._kernel.prepare(self.table.qweight, self.table.scale)
        self._prepared_from = self.table.qweight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._prepared_from is not self.table.qweight:  # first call, or the table was reloaded
            self.prepare()
        y = self._kernel.run(self._state, x.reshape(-1, self.in_features), None)
        return y.reshape(*x.shape[:-1], self.out_features).to(x.dtype)

    def extra_repr(self) -> str:
        return f"tied, in_features={self.in_features}, out_features={self.out_features}, kernel={self.kernel}"
