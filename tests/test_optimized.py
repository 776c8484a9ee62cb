"""The optimized directory: save → load round trip, integrity checks, atomic writing."""

import json
import shutil
from pathlib import Path

import pytest
import torch

import slimvl
from slimvl.errors import ModelLoadError
from slimvl.models.steps import build_sequence, encode_images, prefill
from slimvl.models.weights import weight_bytes
from slimvl.optimized import MANIFEST, WEIGHTS
from slimvl.quant import Int8Linear, apply
from slimvl.quant.kernels import KERNELS, ActQuant, usable_kernels


@pytest.fixture(scope="module")
def optimized_dir(small_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("opt") / "int8"
    return slimvl.optimize(str(small_checkpoint), "int8", out)


def _prefill_logits(slim: slimvl.SlimModel, image) -> torch.Tensor:
    model, pre = slim.loaded.model, slim.loaded.preprocessor
    inputs = pre([image], "What color is the star?")
    with torch.inference_mode():
        return prefill(model, build_sequence(model, inputs, encode_images(model, inputs)))[0]


def test_round_trip_gives_identical_logits(small_checkpoint: Path, optimized_dir: Path, square_image) -> None:
    in_memory = slimvl.load(str(small_checkpoint), "int8")
    reloaded = slimvl.load(str(optimized_dir))
    assert reloaded.recipe.int8 == in_memory.recipe.int8
    assert any(isinstance(m, Int8Linear) for m in reloaded.loaded.model.modules())
    torch.testing.assert_close(
        _prefill_logits(reloaded, square_image), _prefill_logits(in_memory, square_image), rtol=0, atol=0
    )
    a = in_memory.generate([square_image], "What color?", max_new_tokens=6, ignore_eos=True)
    b = reloaded.generate([square_image], "What color?", max_new_tokens=6, ignore_eos=True)
    assert a.token_ids == b.token_ids


def test_a_recipe_that_keeps_the_weights_round_trips_with_the_tied_head(
    small_checkpoint: Path, tmp_path: Path, square_image
) -> None:
    # The stored state holds the tied embedding table once; the head must come back as its alias.
    assert slimvl.load(str(small_checkpoint)).loaded.model.config.tie_word_embeddings
    out = slimvl.optimize(str(small_checkpoint), "sparsify", tmp_path / "sparsify")
    reloaded = slimvl.load(str(out))
    model = reloaded.loaded.model
    assert model.lm_head.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()  # one table
    in_memory = slimvl.load(str(small_checkpoint), "sparsify")
    a = in_memory.generate([square_image], "What color?", max_new_tokens=6, ignore_eos=True)
    b = reloaded.generate([square_image], "What color?", max_new_tokens=6, ignore_eos=True)
    assert a.token_ids == b.token_ids


@pytest.mark.parametrize(
    "kernel", [n for n in usable_kernels((64, 64), ActQuant(127)) if KERNELS[n].copies_weight]
)
def test_a_head_with_its_own_packed_copy_leaves_the_table_in_the_file(
    small_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, square_image, kernel: str
) -> None:
    monkeypatch.setattr(apply, "_select_head", lambda *_args: ("dynamic", kernel))
    out = slimvl.optimize(str(small_checkpoint), "int8", tmp_path / "int8")
    in_memory = slimvl.load(str(small_checkpoint), "int8")
    reloaded = slimvl.load(str(out))
    head = reloaded.loaded.model.lm_head
    table = reloaded.loaded.model.model.language_model.embed_tokens
    applied_table = in_memory.loaded.model.model.language_model.embed_tokens
    assert head.packs_copy and head.kernel == kernel
    assert torch.equal(table.qweight, applied_table.qweight)
    # applied at load time or reloaded, only the packed copy is held: the table is left in a file
    for model, left in ((reloaded.loaded.model, table), (in_memory.loaded.model, applied_table)):
        assert "qweight" in left._non_persistent_buffers_set
        assert weight_bytes(model) == weight_bytes(reloaded.loaded.model)
    torch.testing.assert_close(
        _prefill_logits(reloaded, square_image), _prefill_logits(in_memory, square_image), rtol=0, atol=0
    )
    a = in_memory.generate([square_image], "What color?", max_new_tokens=6, ignore_eos=True)
    b = reloaded.generate([square_image], "What color?", max_new_tokens=6, ignore_eos=True)
    assert a.token_ids == b.token_ids


def test_directory_holds_original_files_and_manifest(optimized_dir: Path) -> None:
    names = {p.name for p in optimized_dir.iterdir()}
    assert {"config.json", "tokenizer.json", "preprocessor_config.json", MANIFEST, WEIGHTS} <= names
    manifest = json.loads((optimized_dir / MANIFEST).read_text())
    assert manifest["format_version"] == 1 and "int8" in manifest["plans"]
    assert not [p for p in optimized_dir.parent.iterdir() if p.name.startswith(".")]  # no temp dir left


def test_optimized_dir_is_smaller(small_checkpoint: Path, optimized_dir: Path) -> None:
    assert (optimized_dir / WEIGHTS).stat().st_size < 0.5 * (
        small_checkpoint / "model.safetensors"
    ).stat().st_size


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete", "manifest"])
def test_damaged_directory_is_a_clear_error(optimized_dir: Path, tmp_path: Path, damage: str) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(optimized_dir, broken)
    weights = broken / WEIGHTS
    if damage == "truncate":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif damage == "flip":
        data = bytearray(weights.read_bytes())
        data[-10] ^= 0xFF
        weights.write_bytes(bytes(data))
    elif damage == "delete":
        weights.unlink()
    else:
        (broken / MANIFEST).write_text("{not json")
    with pytest.raises(ModelLoadError, match="truncated|altered|missing|unreadable"):
        slimvl.load(str(broken))


def test_optimized_dir_refuses_another_recipe(optimized_dir: Path) -> None:
    with pytest.raises(ValueError, match="carries its recipe"):
        slimvl.load(str(optimized_dir), "sparsify")
