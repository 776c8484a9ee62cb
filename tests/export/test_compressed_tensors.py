"""The compressed-tensors export: the format's own config and tensors, read back by slimvl into the
same int8 model (same codes, same greedy tokens) and by plain transformers (decompressed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors import safe_open

import slimvl
from slimvl.cli.main import main
from slimvl.config import INT8QuantizationConfig, PruningConfig, Recipe
from slimvl.errors import InputError, ModelLoadError
from slimvl.export.compressed_tensors import export_compressed_tensors

QUESTION = "Which shape is red?"


@pytest.fixture(scope="module")
def int8_dir(small_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return slimvl.optimize(str(small_checkpoint), "int8", tmp_path_factory.mktemp("int8") / "int8")


@pytest.fixture(scope="module")
def exported(int8_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_compressed_tensors(int8_dir, tmp_path_factory.mktemp("export") / "ct")


def test_the_export_is_compressed_tensors_int8(exported: Path, int8_dir: Path) -> None:
    quantization = json.loads((exported / "config.json").read_text())["quantization_config"]
    assert quantization["quant_method"] == "compressed-tensors"
    assert quantization["format"] == "int-quantized"
    assert quantization["quantization_status"] == "compressed"
    (scheme,) = quantization["config_groups"].values()
    assert scheme["targets"] == ["Linear"]
    assert {k: scheme["weights"][k] for k in ("num_bits", "type", "symmetric", "strategy")} == {
        "num_bits": 8,
        "type": "int",
        "symmetric": True,
        "strategy": "channel",
    }
    inputs = scheme["input_activations"]
    assert (inputs["strategy"], inputs["dynamic"], inputs["num_bits"]) == ("token", True, 8)
    assert quantization["ignore"] == ["lm_head"]  # slimvl's int8 recipe quantizes every other linear
    with (
        safe_open(str(exported / "model.safetensors"), "pt") as f,
        safe_open(str(int8_dir / "model.safetensors"), "pt") as g,
    ):
        name = "model.language_model.layers.0.mlp.down_proj"
        assert torch.equal(f.get_tensor(f"{name}.weight"), g.get_tensor(f"{name}.qweight"))
        scale = f.get_tensor(f"{name}.weight_scale")
        assert scale.shape == (scale.shape[0], 1) and torch.equal(
            scale[:, 0], g.get_tensor(f"{name}.w_scale")
        )
        assert f.get_tensor("model.language_model.embed_tokens.weight").dtype == torch.float32
        assert not any(k.endswith((".qweight", ".w_scale")) or k.startswith("lm_head") for k in f.keys())
    for name in ("tokenizer.json", "preprocessor_config.json"):
        assert (exported / name).is_file()
    assert not (exported / "slimvl.json").exists()


def test_slimvl_reads_its_export_back_to_the_same_int8_model(
    exported: Path, int8_dir: Path, square_image: Image.Image
) -> None:
    imported, original = slimvl.load(exported), slimvl.load(int8_dir)
    assert imported.recipe.int8 == INT8QuantizationConfig()
    ours, theirs = imported.loaded.model.state_dict(), original.loaded.model.state_dict()
    codes = [k for k in theirs if k.endswith(("qweight", "w_scale", ".scale"))]
    assert codes and all(torch.equal(ours[k], theirs[k]) for k in codes)
    a = imported.generate([square_image], QUESTION, max_new_tokens=8, ignore_eos=True)
    b = original.generate([square_image], QUESTION, max_new_tokens=8, ignore_eos=True)
    assert a.token_ids == b.token_ids


def test_plain_transformers_loads_the_export_decompressed(exported: Path, int8_dir: Path) -> None:
    from transformers import CompressedTensorsConfig, Qwen3VLForConditionalGeneration

    model = Qwen3VLForConditionalGeneration.from_pretrained(
        exported, dtype=torch.float32, quantization_config=CompressedTensorsConfig(dequantize=True)
    )
    with safe_open(str(int8_dir / "model.safetensors"), "pt") as g:
        name = "model.language_model.layers.1.self_attn.q_proj"
        expected = g.get_tensor(f"{name}.qweight").float() * g.get_tensor(f"{name}.w_scale").unsqueeze(1)
    weight = model.get_submodule(name).weight
    torch.testing.assert_close(weight.float(), expected, rtol=0, atol=0)


def test_what_cannot_be_exported_or_read_is_refused_in_one_line(
    small_checkpoint: Path, exported: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plain = slimvl.optimize(str(small_checkpoint), "sparsify", tmp_path / "plain")
    with pytest.raises(InputError, match="has no int8 plan"):
        export_compressed_tensors(plain, tmp_path / "x")
    structured = Recipe(
        name="channels",
        pruning=PruningConfig(structured=True, criterion="magnitude", pruning_ratio=0.5),
        int8=INT8QuantizationConfig(),
    )
    with pytest.raises(InputError, match="structurally pruned"):
        export_compressed_tensors(
            slimvl.optimize(str(small_checkpoint), structured, tmp_path / "s"), tmp_path / "y"
        )
    assert (
        main(["export", str(small_checkpoint), "--format", "compressed-tensors", "-o", str(tmp_path / "z")])
        != 0
    )
    assert "not an optimized directory" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not (tmp_path / "z").exists()
    config = json.loads((exported / "config.json").read_text())
    (scheme,) = config["quantization_config"]["config_groups"].values()
    scheme["weights"]["num_bits"] = 4
    (exported / "config.json").write_text(json.dumps(config))
    try:
        with pytest.raises(ModelLoadError, match="not one slimvl runs"):
            slimvl.load(exported)
    finally:
        scheme["weights"]["num_bits"] = 8
        (exported / "config.json").write_text(json.dumps(config))


def test_a_checkpoint_quantized_another_way_is_refused(small_checkpoint: Path, tmp_path: Path) -> None:
    import shutil

    other = tmp_path / "gptq"
    shutil.copytree(small_checkpoint, other)
    config = json.loads((other / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "gptq", "bits": 4}
    (other / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        ModelLoadError, match=r"quantized checkpoint \(gptq\).*compressed-tensors int8 format only"
    ):
        slimvl.load(str(other))
