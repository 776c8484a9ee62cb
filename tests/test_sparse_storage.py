"""The sparse-bitmask storage layout: bit-for-bit round trips, only where it saves bytes."""

from __future__ import annotations

import pytest
import torch

from slimvl.sparse_storage import (
    compress,
    compress_state,
    compressed_bytes,
    decompress,
    decompress_state,
    worth_compressing,
)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.int8])
@pytest.mark.parametrize("cols", [1, 8, 13, 64])
def test_round_trip_is_bit_for_bit(dtype: torch.dtype, cols: int) -> None:
    generator = torch.Generator().manual_seed(cols)
    dense = (torch.randn(7, cols, generator=generator) * 50).to(dtype)
    dense[torch.rand(7, cols, generator=generator) < 0.5] = 0
    if dtype.is_floating_point:
        dense[0, 0] = -0.0  # a signed zero is an entry of its own, kept as such
    parts = compress(dense)
    assert parts["bitmask"].dtype == torch.uint8 and parts["bitmask"].shape == (7, (cols + 7) // 8)
    back = decompress(parts)
    assert back.dtype == dense.dtype
    assert torch.equal(back.view(torch.uint8), dense.view(torch.uint8))


def test_layout_first_entry_in_the_lowest_bit_and_row_offsets() -> None:
    dense = torch.tensor(
        [[1.0, 0, 0, 2.0, 0, 0, 0, 0, 3.0], [0, 0, 0, 0, 0, 0, 0, 0, 0], [0, 4.0, 0, 0, 0, 0, 0, 0, 0]]
    )
    parts = compress(dense)
    assert parts["bitmask"].tolist() == [[0b1001, 0b1], [0, 0], [0b10, 0]]
    assert parts["compressed"].tolist() == [1.0, 2.0, 3.0, 4.0]
    assert parts["row_offsets"].tolist() == [0, 3, 3]
    assert parts["shape"].tolist() == [3, 9]


def test_only_sparse_two_dimensional_tensors_are_worth_it() -> None:
    dense = torch.randn(64, 64)
    pruned = dense.clone()
    pruned[:, :32] = 0
    assert not worth_compressing(dense) and not worth_compressing(torch.zeros(64))
    assert worth_compressing(pruned)
    assert compressed_bytes(pruned) < 0.6 * pruned.numel() * 4
    stored, names = compress_state({"a": dense, "b": pruned})
    assert names == ["b"] and torch.equal(stored["a"], dense) and "b" not in stored
    assert torch.equal(decompress_state(stored, names)["b"], pruned)


def test_parts_that_disagree_are_refused() -> None:
    pruned = torch.randn(4, 16)
    pruned[:, ::2] = 0
    parts = compress(pruned)
    parts["compressed"] = parts["compressed"][:-1]
    with pytest.raises(ValueError, match="the bitmask marks 32 entries, 31 are stored"):
        decompress(parts)
    parts = compress(pruned)
    parts["shape"] = torch.tensor([4, 32])
    with pytest.raises(ValueError, match="does not fit a 4 x 32 tensor"):
        decompress(parts)
