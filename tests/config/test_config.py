import dataclasses
import json

import pytest

from slimvl.config import (
    PRESET_NAMES,
    RECIPE_FORMAT_VERSION,
    AdaptivePrecisionConfig,
    INT8QuantizationConfig,
    PruningConfig,
    Recipe,
    SparsificationConfig,
    preset,
    resolve_recipe,
    sections,
)


def test_seed_snippet_runs():
    int8_config = INT8QuantizationConfig(
        quantization_mode="static",
        activation_bits=8,
        weight_bits=8,
        quantize_embeddings=True,
        quantize_attention=True,
        quantize_mlp=True,
    )
    sparsification_config = SparsificationConfig(
        sparsity_ratio=0.6, sparsity_method="top_k", min_tokens_per_image=32, max_tokens_per_image=128
    )
    pruning_config = PruningConfig(pruning_ratio=0.3, pruning_schedule="iterative", num_pruning_steps=5)
    adaptive_precision_config = AdaptivePrecisionConfig(
        base_precision="fp16", enable_dynamic_precision=True, min_precision="int8", max_precision="fp32"
    )
    assert int8_config.quantization_mode == "static"
    assert sparsification_config.sparsity_ratio == 0.6
    assert pruning_config.num_pruning_steps == 5
    assert adaptive_precision_config.max_precision == "fp32"


@pytest.mark.parametrize(
    ("cls", "kwargs", "field", "bad"),
    [
        (INT8QuantizationConfig, {"quantization_mode": "fancy"}, "quantization_mode", "fancy"),
        (INT8QuantizationConfig, {"weight_bits": 4}, "weight_bits", "4"),
        (INT8QuantizationConfig, {"activation_bits": 12}, "activation_bits", "12"),
        (INT8QuantizationConfig, {"activation_bits": 8.0}, "activation_bits", "8.0"),
        (
            INT8QuantizationConfig,
            {"quantization_mode": "static", "activation_bits": 16},
            "activation_bits",
            "16",
        ),
        (INT8QuantizationConfig, {"quantize_mlp": 1}, "quantize_mlp", "1"),
        (INT8QuantizationConfig, {"reduce_range": "yes"}, "reduce_range", "yes"),
        (INT8QuantizationConfig, {"smoothquant_alpha": 1.5}, "smoothquant_alpha", "1.5"),
        (INT8QuantizationConfig, {"calibration_samples": 0}, "calibration_samples", "0"),
        (INT8QuantizationConfig, {"calibration_samples": True}, "calibration_samples", "True"),
        (SparsificationConfig, {"sparsity_ratio": 1.5}, "sparsity_ratio", "1.5"),
        (SparsificationConfig, {"sparsity_ratio": 1}, "sparsity_ratio", "1"),
        (SparsificationConfig, {"sparsity_ratio": -0.1}, "sparsity_ratio", "-0.1"),
        (SparsificationConfig, {"sparsity_ratio": True}, "sparsity_ratio", "True"),
        (SparsificationConfig, {"sparsity_ratio": float("nan")}, "sparsity_ratio", "nan"),
        (SparsificationConfig, {"sparsity_method": "best"}, "sparsity_method", "best"),
        (SparsificationConfig, {"scorer": "clip"}, "scorer", "clip"),
        (SparsificationConfig, {"min_tokens_per_image": 0}, "min_tokens_per_image", "0"),
        (
            SparsificationConfig,
            {"min_tokens_per_image": 64, "max_tokens_per_image": 32},
            "max_tokens_per_image",
            "32",
        ),
        (SparsificationConfig, {"score_layer": -1}, "score_layer", "-1"),
        (SparsificationConfig, {"score_layer": 2.0}, "score_layer", "2.0"),
        (SparsificationConfig, {"seed": False}, "seed", "False"),
        (PruningConfig, {"pruning_ratio": 1.0}, "pruning_ratio", "1.0"),
        (PruningConfig, {"pruning_schedule": "gradual"}, "pruning_schedule", "gradual"),
        (PruningConfig, {"num_pruning_steps": 0}, "num_pruning_steps", "0"),
        (PruningConfig, {"criterion": "obs"}, "criterion", "obs"),
        (PruningConfig, {"structured": None}, "structured", "None"),
        (PruningConfig, {"protected_modules": "lm_head"}, "protected_modules", "lm_head"),
        (PruningConfig, {"protected_modules": ["lm_head", 3]}, "protected_modules", "['lm_head', 3]"),
        (PruningConfig, {"fine_tune_steps": -1}, "fine_tune_steps", "-1"),
        (AdaptivePrecisionConfig, {"base_precision": "fp8"}, "base_precision", "fp8"),
        (AdaptivePrecisionConfig, {"min_precision": "fp32"}, "min_precision", "fp32"),
        (AdaptivePrecisionConfig, {"max_precision": "int8"}, "max_precision", "int8"),
        (
            AdaptivePrecisionConfig,
            {"base_precision": "fp32", "max_precision": "bf16"},
            "max_precision",
            "bf16",
        ),
        (AdaptivePrecisionConfig, {"enable_dynamic_precision": "true"}, "enable_dynamic_precision", "true"),
        (AdaptivePrecisionConfig, {"sensitivity_budget": 0}, "sensitivity_budget", "0"),
        (AdaptivePrecisionConfig, {"sensitivity_budget": float("inf")}, "sensitivity_budget", "inf"),
        (AdaptivePrecisionConfig, {"memory_headroom_mb": -1}, "memory_headroom_mb", "-1"),
        (AdaptivePrecisionConfig, {"memory_headroom_mb": True}, "memory_headroom_mb", "True"),
    ],
)
def test_validation_errors_name_field_and_value(cls, kwargs, field, bad):
    with pytest.raises(ValueError) as info:
        cls(**kwargs)
    message = str(info.value)
    assert f"{cls.__name__}.{field}" in message
    assert f"got {bad}" in message or f"got '{bad}'" in message
    assert "allowed:" in message
    assert "\n" not in message


def test_sparsity_ratio_message_format():
    with pytest.raises(
        ValueError, match=r"^SparsificationConfig\.sparsity_ratio: got 1\.5, allowed: a number in \[0, 1\)$"
    ):
        SparsificationConfig(sparsity_ratio=1.5)


def test_min_greater_than_max_names_both_fields():
    with pytest.raises(ValueError) as info:
        SparsificationConfig(min_tokens_per_image=64, max_tokens_per_image=32)
    assert "max_tokens_per_image" in str(info.value)
    assert "min_tokens_per_image" in str(info.value)


def test_valid_edge_values_and_coercions():
    assert INT8QuantizationConfig(quantization_mode="weight_only", activation_bits=16).activation_bits == 16
    assert INT8QuantizationConfig(smoothquant_alpha=1).smoothquant_alpha == 1.0
    assert isinstance(SparsificationConfig(sparsity_ratio=0).sparsity_ratio, float)
    assert PruningConfig(protected_modules=["a", "b"]).protected_modules == ("a", "b")
    assert AdaptivePrecisionConfig(base_precision="bf16", min_precision="fp16", max_precision="fp16")
    config = SparsificationConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.sparsity_ratio = 0.9  # type: ignore[misc]
    with pytest.raises(ValueError, match="sparsity_ratio"):
        dataclasses.replace(config, sparsity_ratio=2.0)


@pytest.mark.parametrize(("n", "expected"), [(196, 78), (400, 128), (40, 32), (20, 20), (0, 0), (80, 32)])
def test_tokens_to_keep(n, expected):
    assert SparsificationConfig().tokens_to_keep(n) == expected


def test_tokens_to_keep_ratio_zero_keeps_everything():
    config = SparsificationConfig(sparsity_ratio=0.0)
    assert config.tokens_to_keep(1000) == 1000
    assert config.tokens_to_keep(5) == 5


@pytest.mark.parametrize("n", [-1, 2.0, True])
def test_tokens_to_keep_rejects_bad_n(n):
    with pytest.raises(ValueError, match="n_visual"):
        SparsificationConfig().tokens_to_keep(n)


def test_ratio_at_step_iterative_is_cubic():
    config = PruningConfig(pruning_ratio=0.3, pruning_schedule="iterative", num_pruning_steps=5)
    ratios = [config.ratio_at_step(k) for k in range(1, 6)]
    assert ratios == pytest.approx([0.3 * (1 - (1 - k / 5) ** 3) for k in range(1, 6)])
    assert ratios[0] == pytest.approx(0.1464)
    assert ratios[-1] == pytest.approx(0.3)
    assert ratios == sorted(ratios)


def test_ratio_at_step_one_shot_and_bounds():
    config = PruningConfig(pruning_ratio=0.5, pruning_schedule="one_shot", num_pruning_steps=3)
    assert [config.ratio_at_step(k) for k in (1, 2, 3)] == [0.5, 0.5, 0.5]
    for bad in (0, 4, 1.0):
        with pytest.raises(ValueError, match="step"):
            config.ratio_at_step(bad)


def test_presets():
    assert set(PRESET_NAMES) == {"none", "laptop", "int8", "sparsify", "prune", "adaptive"}
    assert preset("none").is_empty
    laptop = preset("laptop")
    assert all(getattr(laptop, key) is not None for key in [s.key for s in sections()])
    assert laptop.int8.quantization_mode == "dynamic"
    assert preset("int8").int8.quantization_mode == "dynamic"
    assert laptop.sparsification == SparsificationConfig(
        sparsity_ratio=0.6, sparsity_method="top_k", min_tokens_per_image=32, max_tokens_per_image=128
    )
    # the seed's pruning and precision settings alone buy no speed on a CPU: laptop removes whole
    # channels and mixes int4 with int8 instead
    assert preset("prune").pruning == PruningConfig(
        pruning_ratio=0.3, pruning_schedule="iterative", num_pruning_steps=5
    )
    assert laptop.pruning.structured and laptop.pruning.pruning_ratio == 0.3
    assert (
        laptop.adaptive_precision.min_precision == "int4"
        and laptop.adaptive_precision.enable_dynamic_precision
    )
    for name, key in [
        ("int8", "int8"),
        ("sparsify", "sparsification"),
        ("prune", "pruning"),
        ("adaptive", "adaptive_precision"),
    ]:
        recipe = preset(name)
        assert recipe.name == name
        assert [k for k in [s.key for s in sections()] if getattr(recipe, k) is not None] == [key]
        if key in ("int8", "sparsification"):
            assert getattr(recipe, key) == getattr(laptop, key)


def test_unknown_preset_lists_allowed():
    with pytest.raises(ValueError) as info:
        preset("turbo")
    assert "turbo" in str(info.value)
    assert all(name in str(info.value) for name in PRESET_NAMES)


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_round_trips_are_lossless(name):
    recipe = preset(name)
    assert Recipe.from_yaml(recipe.to_yaml()) == recipe
    assert Recipe.from_json(recipe.to_json()) == recipe
    assert Recipe.from_dict(recipe.to_dict()) == recipe
    assert recipe.to_dict()["version"] == RECIPE_FORMAT_VERSION


def test_round_trip_keeps_tuples_and_non_default_values():
    recipe = Recipe(
        name="mine",
        int8=INT8QuantizationConfig(
            quantization_mode="weight_only", activation_bits=32, smoothquant_alpha=0.5
        ),
        pruning=PruningConfig(protected_modules=["lm_head"], structured=True),
    )
    for loaded in (Recipe.from_yaml(recipe.to_yaml()), Recipe.from_json(recipe.to_json())):
        assert loaded == recipe
        assert isinstance(loaded.pruning.protected_modules, tuple)


def test_missing_sections_and_fields_take_defaults():
    recipe = Recipe.from_yaml("name: partial\nsparsification:\n  sparsity_ratio: 0.5\n")
    assert recipe.sparsification == SparsificationConfig(sparsity_ratio=0.5)
    assert recipe.int8 is None and recipe.pruning is None and recipe.adaptive_precision is None
    assert Recipe.from_dict({}).is_empty


def test_unknown_top_level_key_rejected():
    with pytest.raises(ValueError) as info:
        Recipe.from_dict({"version": 1, "name": "x", "quantise": {}})
    message = str(info.value)
    assert "quantise" in message
    assert "int8" in message and "adaptive_precision" in message


def test_unknown_section_key_rejected():
    data = preset("laptop").to_dict()
    data["sparsification"]["sparsity_ration"] = 0.5
    with pytest.raises(ValueError) as info:
        Recipe.from_dict(data)
    message = str(info.value)
    assert "sparsity_ration" in message
    assert "sparsification" in message and "min_tokens_per_image" in message


def test_future_version_rejected():
    data = preset("laptop").to_dict()
    data["version"] = RECIPE_FORMAT_VERSION + 1
    with pytest.raises(ValueError, match="version"):
        Recipe.from_dict(data)


def test_section_must_be_mapping():
    with pytest.raises(ValueError, match="pruning"):
        Recipe.from_dict({"pruning": [1, 2]})


@pytest.mark.parametrize("suffix", [".yaml", ".yml", ".json"])
def test_save_and_load(tmp_path, suffix):
    recipe = preset("laptop")
    path = tmp_path / f"recipe{suffix}"
    recipe.save(path)
    assert Recipe.load(path) == recipe
    assert Recipe.load(str(path)) == recipe
    assert [p.name for p in tmp_path.iterdir()] == [path.name]
    if suffix == ".json":
        assert json.loads(path.read_text())["name"] == "laptop"


def test_save_overwrites_and_rejects_unknown_suffix(tmp_path):
    path = tmp_path / "r.yaml"
    preset("laptop").save(path)
    preset("none").save(path)
    assert Recipe.load(path).is_empty
    with pytest.raises(ValueError, match="suffix"):
        preset("none").save(tmp_path / "r.toml")


@pytest.mark.parametrize(
    ("filename", "text"),
    [
        ("bad.yaml", "name: [unclosed\n"),
        ("bad.json", '{"name": "x",}'),
        ("list.yaml", "- 1\n- 2\n"),
        ("empty.yaml", ""),
        ("badvalue.yaml", "sparsification:\n  sparsity_ratio: 1.5\n"),
    ],
)
def test_malformed_files_give_one_line_error_naming_file(tmp_path, filename, text):
    path = tmp_path / filename
    path.write_text(text)
    with pytest.raises(ValueError) as info:
        Recipe.load(path)
    message = str(info.value)
    assert str(path) in message
    assert "\n" not in message


def test_resolve_recipe(tmp_path):
    recipe = preset("prune")
    assert resolve_recipe(recipe) is recipe
    assert resolve_recipe(None).is_empty
    assert resolve_recipe("laptop") == preset("laptop")
    path = tmp_path / "custom.json"
    recipe.renamed("custom").save(path)
    assert resolve_recipe(str(path)).name == "custom"
    with pytest.raises(ValueError) as info:
        resolve_recipe("nonexistent")
    assert "unknown recipe 'nonexistent'" in str(info.value)
    assert "laptop" in str(info.value) and "no such file" in str(info.value)


def test_recipe_rejects_wrong_section_type():
    with pytest.raises(ValueError, match="Recipe.int8"):
        Recipe(int8=SparsificationConfig())
