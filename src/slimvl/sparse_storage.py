"""Zeros stored compressed on disk, in the layout of compressed-tensors' ``sparse-bitmask`` format.

A 2-D tensor ``name`` becomes four tensors: ``name.shape`` (int64), ``name.compressed`` (its nonzero
entries, row by row), ``name.bitmask`` (one bit per entry, 1 = nonzero, packed eight to a byte along
each row, first entry in the lowest bit) and ``name.row_offsets`` (int64: where each row's entries start
in ``compressed``). In memory the tensor is dense again: dense kernels need it so, and unstructured
sparsity buys them nothing. Round trips are bit for bit (a float -0.0 counts as a nonzero entry).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

PARTS = ("shape", "compressed", "bitmask", "row_offsets")
# store a tensor compressed only when that saves at least this fraction of its bytes
MIN_SAVING = 0.10

_SAME_SIZE_INT = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
_BIT = torch.arange(8, dtype=torch.uint8)


def nonzero_mask(tensor: torch.Tensor) -> torch.Tensor:
    """True where an entry's bits are not all zero."""
    return tensor.view(_SAME_SIZE_INT[tensor.element_size()]) != 0


def compressed_bytes(tensor: torch.Tensor) -> int:
    rows, cols = tensor.shape
    nonzero = int(nonzero_mask(tensor).sum())
    return nonzero * tensor.element_size() + rows * ((cols + 7) // 8) + rows * 8 + 16


def worth_compressing(tensor: torch.Tensor) -> bool:
    """2-D and at least `MIN_SAVING` smaller compressed (a pruned weight; not a dense one)."""
    if tensor.dim() != 2 or tensor.element_size() not in _SAME_SIZE_INT or tensor.numel() == 0:
        return False
    return compressed_bytes(tensor) <= (1 - MIN_SAVING) * tensor.numel() * tensor.element_size()


def compress(tensor: torch.Tensor) -> dict[str, torch.Tensor]:
    """The four parts of a 2-D `tensor`, keyed by `PARTS`."""
    mask = nonzero_mask(tensor)
    rows, cols = mask.shape
    bits = F.pad(mask, (0, (-cols) % 8)).view(rows, -1, 8).to(torch.uint8)
    packed = (bits << _BIT).sum(dim=-1, dtype=torch.uint8)
    per_row = mask.sum(dim=1)
    return {
        "shape": torch.tensor([rows, cols], dtype=torch.int64),
        "compressed": tensor[mask],
        "bitmask": packed,
        "row_offsets": per_row.cumsum(0) - per_row,
    }


def decompress(parts: dict[str, torch.Tensor]) -> torch.Tensor:
    """The dense tensor of `compress`'s parts; ValueError if they disagree with each other."""
    rows, cols = (int(v) for v in parts["shape"])
    packed, values = parts["bitmask"], parts["compressed"]
    if tuple(packed.shape) != (rows, (cols + 7) // 8):
        raise ValueError(f"bitmask of shape {tuple(packed.shape)} does not fit a {rows} x {cols} tensor")
    mask = ((packed.unsqueeze(-1) >> _BIT) & 1).view(rows, -1)[:, :cols].bool()
    if int(mask.sum()) != values.numel():
        raise ValueError(f"the bitmask marks {int(mask.sum())} entries, {values.numel()} are stored")
    dense = torch.zeros(rows, cols, dtype=values.dtype)
    dense[mask] = values
    return dense


def compress_state(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """`state` with every tensor worth it compressed, and the names of those tensors."""
    out, names = {}, []
    for name, tensor in state.items():
        if worth_compressing(tensor):
            names.append(name)
            out |= {f"{name}.{part}": value for part, value in compress(tensor).items()}
        else:
            out[name] = tensor
    return out, names


def decompress_state(state: dict[str, torch.Tensor], names: list[str]) -> dict[str, torch.Tensor]:
    """`state` with the tensors `names` (stored compressed) dense again, in place."""
    for name in names:
        parts = {part: state.pop(f"{name}.{part}") for part in PARTS}
        state[name] = decompress(parts)
    return state
