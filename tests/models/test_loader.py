from __future__ import annotations

import json
import shutil
from importlib import resources
from pathlib import Path

import pytest
import torch
from transformers import Qwen3VLForConditionalGeneration

from slimvl.errors import ModelLoadError
from slimvl.models.builder import SHAPE_NAMES, config_from_dict, random_model, shape_config
from slimvl.models.checkpoint import small_config_dict
from slimvl.models.loader import load_model, read_checkpoint_config


def test_loads_random_checkpoint(small_checkpoint: Path) -> None:
    loaded = load_model(str(small_checkpoint))
    assert isinstance(loaded.model, Qwen3VLForConditionalGeneration)
    assert loaded.source == str(small_checkpoint) and loaded.path == small_checkpoint
    assert not loaded.model.training
    expected = small_config_dict(vocab_size=loaded.model.config.text_config.vocab_size)
    assert loaded.model.config.text_config.hidden_size == expected["text_config"]["hidden_size"]
    assert loaded.model.config.vision_config.depth == expected["vision_config"]["depth"]
    assert {p.dtype for p in loaded.model.parameters()} == {torch.float32}


def test_loads_in_bf16(small_checkpoint: Path) -> None:
    loaded = load_model(str(small_checkpoint), dtype="bf16")
    assert {p.dtype for p in loaded.model.parameters()} == {torch.bfloat16}


def test_unknown_dtype(small_checkpoint: Path) -> None:
    with pytest.raises(ModelLoadError, match="dtype: got 'int3'"):
        load_model(str(small_checkpoint), dtype="int3")


def _write_config(path: Path, **overrides: object) -> Path:
    path.mkdir()
    raw = small_config_dict(vocab_size=512)
    raw.update(overrides)
    (path / "config.json").write_text(json.dumps(raw))
    (path / "model.safetensors").write_bytes(b"")
    return path


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="model not found.*builtin:tiny"):
        load_model(str(tmp_path / "nope"))


def test_file_instead_of_directory(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"")
    with pytest.raises(ModelLoadError, match="is a file"):
        load_model(str(path))


def test_directory_without_config(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_model(str(tmp_path))


def test_config_not_json(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="not valid JSON"):
        load_model(str(tmp_path))


def test_qwen25_vl_is_rejected(tmp_path: Path) -> None:
    path = _write_config(
        tmp_path / "qwen25", model_type="qwen2_5_vl", architectures=["Qwen2_5_VLForConditionalGeneration"]
    )
    with pytest.raises(ModelLoadError, match="qwen2_5_vl model.*supports dense Qwen3-VL"):
        load_model(str(path))


def test_moe_is_rejected(tmp_path: Path) -> None:
    path = _write_config(
        tmp_path / "moe", model_type="qwen3_vl_moe", architectures=["Qwen3VLMoeForConditionalGeneration"]
    )
    with pytest.raises(ModelLoadError, match="qwen3_vl_moe model.*supports dense Qwen3-VL"):
        load_model(str(path))


def test_config_without_weights(tmp_path: Path, small_checkpoint: Path) -> None:
    (tmp_path / "empty").mkdir()
    shutil.copy(small_checkpoint / "config.json", tmp_path / "empty" / "config.json")
    with pytest.raises(ModelLoadError, match=r"no \*\.safetensors"):
        load_model(str(tmp_path / "empty"))


def test_corrupt_weights(tmp_path: Path, small_checkpoint: Path) -> None:
    path = tmp_path / "corrupt"
    shutil.copytree(small_checkpoint, path)
    (path / "model.safetensors").write_bytes(b"garbage" * 100)
    with pytest.raises(ModelLoadError, match="cannot load checkpoint"):
        load_model(str(path))


def test_read_checkpoint_config_returns_the_config(small_checkpoint: Path) -> None:
    assert read_checkpoint_config(small_checkpoint)["model_type"] == "qwen3_vl"


def test_unknown_builtin() -> None:
    with pytest.raises(ModelLoadError, match="unknown model 'builtin:nope'.*builtin:2b-shape"):
        load_model("builtin:nope")


def test_builtin_tiny_ships_as_a_real_small_qwen3vl() -> None:
    from slimvl.models.loader import tiny_path

    loaded = load_model("builtin:tiny")
    assert isinstance(loaded.model, Qwen3VLForConditionalGeneration)
    config = loaded.model.config
    assert config.tie_word_embeddings and config.vision_config.deepstack_visual_indexes
    assert (config.vision_config.patch_size, config.vision_config.spatial_merge_size) == (16, 2)
    assert sum(f.stat().st_size for f in tiny_path().iterdir()) < 40e6
    record = json.loads((tiny_path() / "training.json").read_text())
    assert record["command"].startswith("python scripts/train_tiny.py") and record["train_seconds"] > 0


def test_2b_shape_config() -> None:
    config = shape_config("2b")
    text, vision = config.text_config, config.vision_config
    assert (text.hidden_size, text.num_hidden_layers, text.intermediate_size, text.vocab_size) == (
        2048,
        28,
        6144,
        151936,
    )
    assert (text.num_attention_heads, text.num_key_value_heads) == (16, 8)
    assert config.tie_word_embeddings
    assert (vision.depth, vision.hidden_size, vision.out_hidden_size) == (24, 1024, 2048)
    assert vision.deepstack_visual_indexes == [5, 11, 17]


def test_8b_shape_config() -> None:
    config = shape_config("8b")
    assert not config.tie_word_embeddings
    assert config.text_config.hidden_size == config.vision_config.out_hidden_size == 4096


@pytest.mark.parametrize("name", SHAPE_NAMES)
def test_shape_configs_are_consistent(name: str) -> None:
    config = shape_config(name, image_token_id=7)
    assert config.image_token_id == 7
    assert config.vision_config.out_hidden_size == config.text_config.hidden_size
    assert max(config.vision_config.deepstack_visual_indexes) < config.vision_config.depth


def test_unknown_shape() -> None:
    with pytest.raises(ValueError, match="unknown shape '1b'"):
        shape_config("1b")


def test_random_model_is_built_in_bf16() -> None:
    raw = json.loads(resources.files("slimvl.models").joinpath("shapes/2b.json").read_text())
    raw["text_config"]["num_hidden_layers"] = 1
    raw["vision_config"]["depth"] = 1
    raw["vision_config"]["deepstack_visual_indexes"] = [0]
    model = random_model(config_from_dict(raw), torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert model.lm_head.weight is model.model.language_model.embed_tokens.weight
    assert model.config.text_config.hidden_size == 2048
