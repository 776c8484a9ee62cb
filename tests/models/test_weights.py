from __future__ import annotations

import pytest
import torch
from torch import nn

from slimvl.models.builder import config_from_dict, random_model
from slimvl.models.checkpoint import small_config_dict
from slimvl.models.loader import LoadedModel
from slimvl.models.weights import (
    DECODER,
    EMBEDDINGS,
    VISION,
    decode_bytes_per_token,
    weight_bytes,
    weight_table,
)


def _nbytes(tensors: object) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


@pytest.fixture(scope="module")
def untied_model() -> nn.Module:
    raw = small_config_dict(vocab_size=512, text_layers=1, vision_depth=1, deepstack=(0,))
    raw["tie_word_embeddings"] = raw["text_config"]["tie_word_embeddings"] = False
    return random_model(config_from_dict(raw), torch.float32)


def test_tied_weights_count_once(small_model: LoadedModel) -> None:
    model = small_model.model
    assert model.lm_head.weight is model.model.language_model.embed_tokens.weight
    state = model.state_dict()
    assert weight_bytes(model) == _nbytes(state.values()) - _nbytes([state["lm_head.weight"]])


def test_untied_weights_count_both(untied_model: nn.Module) -> None:
    assert weight_bytes(untied_model) == _nbytes(untied_model.state_dict().values())


@pytest.mark.parametrize("which", ["tied", "untied"])
def test_weight_table_sums_to_weight_bytes(
    which: str, small_model: LoadedModel, untied_model: nn.Module
) -> None:
    model = small_model.model if which == "tied" else untied_model
    table = weight_table(model)
    assert set(table) == {VISION, DECODER, EMBEDDINGS}
    assert sum(cell["bytes"] for cells in table.values() for cell in cells.values()) == weight_bytes(model)
    assert sum(cell["params"] for cells in table.values() for cell in cells.values()) == sum(
        p.numel() for p in model.parameters()
    )
    assert table[VISION]["float32"]["bytes"] == _nbytes(model.model.visual.parameters())


def test_weight_table_by_dtype() -> None:
    raw = small_config_dict(vocab_size=512, text_layers=1, vision_depth=1, deepstack=(0,))
    model = random_model(config_from_dict(raw), torch.bfloat16)
    table = weight_table(model)
    assert all(set(cells) == {"bfloat16"} for cells in table.values())
    assert table[EMBEDDINGS]["bfloat16"]["bytes"] == 2 * model.lm_head.weight.numel()


@pytest.mark.parametrize("which", ["tied", "untied"])
def test_decode_bytes_are_decoder_norm_and_lm_head(
    which: str, small_model: LoadedModel, untied_model: nn.Module
) -> None:
    model = small_model.model if which == "tied" else untied_model
    text = model.model.language_model
    expected = (
        _nbytes(text.layers.parameters()) + _nbytes(text.norm.parameters()) + _nbytes([model.lm_head.weight])
    )
    assert decode_bytes_per_token(model) == expected
    assert decode_bytes_per_token(model) < weight_bytes(model)


def test_wrapper_subclass_weights_count_their_inner_tensors() -> None:
    import torch
    from torch.testing._internal.two_tensor import TwoTensor

    from slimvl.models.weights import weight_bytes

    layer = torch.nn.Linear(8, 4, bias=False)
    inner = torch.zeros(4, 8)
    layer.weight = torch.nn.Parameter(TwoTensor(inner, torch.ones(4, 8)), requires_grad=False)
    assert weight_bytes(layer) == 2 * 4 * 8 * 4
