"""An int8 embedding table with per-row scales, and the tied ``lm_head`` that reads the same table."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from slimvl.quant.int8_math import activation_qmax, quantize_embedding_per_row
from slimvl.quant.kernels import ActQuant, aligned, per_token
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
        self._file: tuple[str, int] | None = None  # (path, offset) once the table is left in its file

    @classmethod
    def from_embedding(cls, embedding: nn.Embedding) -> Int8Embedding:
        weight = embedding.weight
        module = cls(embedding.num_embeddings, embedding.embedding_dim, dtype=weight.dtype, device="meta")
        module.qweight, module.scale = quantize_embedding_per_row(weight)
        return module

    def leave_in_file(self, mapped: torch.Tensor, file: str, offset: int) -> None:
        """Serve lookups from ``file`` (the table's bytes start at ``offset``) instead of holding the
        table in memory: each lookup reads only its rows. For a tied head that packs its own copy.
        ``mapped`` (the table mapped from the file, never touched here) stands in as ``qweight``, so the
        module keeps its shape; it no longer counts as held in memory (a non-persistent buffer).

        Lookups read rather than go through the mapping: a page fault on a mapping maps the whole
        (large) page-cache folio around it, ~0.5 MB of RSS per looked-up row here, 75 MB after four
        requests at 2B; a read keeps nothing in the process."""
        if mapped.shape != self.qweight.shape or mapped.dtype != torch.int8:
            raise ValueError(
                f"mapped: got {tuple(mapped.shape)} {mapped.dtype}, allowed: the table's shape, int8"
            )
        del self._buffers["qweight"]
        self.register_buffer("qweight", mapped, persistent=False)
        self._file = (file, offset)

    def _save_to_state_dict(self, destination: dict, prefix: str, keep_vars: bool) -> None:
        """A table left in its file is saved all the same (read through the mapping)."""
        super()._save_to_state_dict(destination, prefix, keep_vars)
        if self._file is not None:
            destination[prefix + "qweight"] = self.qweight

    def rows(self, start: int, stop: int) -> torch.Tensor:
        """Rows ``start:stop`` of the table in memory of their own."""
        if self._file is None:
            return self.qweight[start:stop].contiguous()
        return self._read_rows(range(start, stop))

    def _read_rows(self, ids: range | list[int]) -> torch.Tensor:
        """Rows ``ids`` read from the file the table was left in (consecutive ids in one read)."""
        path, offset = self._file
        out = torch.empty(len(ids), self.embedding_dim, dtype=torch.int8)
        buffer = memoryview(out.numpy()).cast("B")
        row_bytes = self.embedding_dim
        with open(path, "rb", buffering=0) as f:
            if isinstance(ids, range) and ids.step == 1:
                f.seek(offset + ids.start * row_bytes)
                if f.readinto(buffer) != out.numel():
                    raise OSError(f"{path} ends inside the embedding table")
                return out
            for i, row in enumerate(ids):
                f.seek(offset + row * row_bytes)
                if f.readinto(buffer[i * row_bytes : (i + 1) * row_bytes]) != row_bytes:
                    raise OSError(f"{path} ends inside the embedding table")
        return out

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if self._file is None:
            rows = F.embedding(ids, self.qweight)
        else:
            unique, inverse = torch.unique(ids, return_inverse=True)
            rows = self._read_rows(unique.tolist())[inverse]
        return (rows.to(torch.float32) * self.scale[ids].unsqueeze(-1)).to(self.dtype)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, dtype={self.dtype}"


# Rows of the table a copying kernel packs at once: the transient plain copy stays small.
PACK_CHUNK_ROWS = 16384


class TiedInt8LMHead(nn.Module):
    """``logits = x @ (qweight · scale)ᵀ`` over the SAME table as the token embedding.

    Each row of the table is one output channel of ``lm_head``, so its per-row scale is the
    per-output-channel scale: one int8 table serves both. ``table`` is the embedding module itself
    (registered here too, so ``state_dict`` lists its tensors under both names, as transformers does
    for tied weights; they are the same tensors).

    ``mode`` ``"weight_only"``: the kernel reads the table in place (float activations). ``"dynamic"``:
    a W8A8 kernel that keeps its own packed copy (fbgemm: ~1.6-2.5x faster than ``_weight_int8pack_mm``
    on this 150k x 2k matmul at one token), packed chunk by chunk; the table then only serves lookups,
    and a loaded optimized directory leaves it in the file (``Int8Embedding.leave_in_file``), so its
    bytes are still held in memory once.
    """

    def __init__(
        self, table: Int8Embedding, kernel: str, mode: str = "weight_only", reduce_range: bool = True
    ):
        super().__init__()
        if mode not in ("weight_only", "dynamic"):
            raise ValueError(f"mode: got {mode!r}, allowed: 'weight_only', 'dynamic'")
        found = check_kernel(
            kernel, (table.num_embeddings, table.embedding_dim), weight_only=mode == "weight_only"
        )
        if found.copies_weight != (mode == "dynamic"):
            raise ValueError(
                f"kernel {kernel!r}: a tied head reads the table in place (weight_only) or packs its own "
                "copy with quantized activations (dynamic)"
            )
        self.table, self.kernel, self.mode, self._kernel = table, kernel, mode, found
        self.in_features, self.out_features = table.embedding_dim, table.num_embeddings
        self._act = ActQuant(activation_qmax(reduce_range)) if mode == "dynamic" else None
        self._states: list[Any] = []
        self._prepared_from: torch.Tensor | None = None

    def prepare(self) -> None:
        """Prepare the kernel on the table (done by the first forward otherwise)."""
        table = self.table
        if self._kernel.copies_weight:
            if self._states:
                return  # packed once: the table may since have been mapped out of memory
            self._states = [
                self._kernel.prepare(
                    table.rows(i, min(i + PACK_CHUNK_ROWS, self.out_features)),
                    table.scale[i : i + PACK_CHUNK_ROWS],
                )
                for i in range(0, self.out_features, PACK_CHUNK_ROWS)
            ]
            return
        table.qweight = aligned(table.qweight)  # the kernel reads it in place
        self._states = [self._kernel.prepare(table.qweight, table.scale)]
        self._prepared_from = table.qweight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        stale = not self._kernel.copies_weight and self._prepared_from is not self.table.qweight
        if not self._states or stale:  # first call, or the table was reloaded
            self.prepare()
        rows = x.reshape(-1, self.in_features)

        def run(r: torch.Tensor) -> torch.Tensor:
            parts = [self._kernel.run(state, r, self._act) for state in self._states]
            return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)

        y = run(rows) if self._act is None else per_token(run, rows)
        return y.reshape(*x.shape[:-1], self.out_features).to(x.dtype)

    @property
    def packs_copy(self) -> bool:
        return self._kernel.copies_weight

    def packed_tensors(self) -> list[tuple[str, int, int, str]]:
        """The packed copy a dynamic head holds: (name, numel, bytes, dtype)."""
        if not (self._kernel.copies_weight and self._states):
            return []
        n = self.out_features * self.in_features
        return [("packed_table", n, n, "int8")]

    def extra_repr(self) -> str:
        return (
            f"tied, in_features={self.in_features}, out_features={self.out_features}, "
            f"mode={self.mode}, kernel={self.kernel}"
        )
