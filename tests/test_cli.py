from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from slimvl import api
from slimvl.api import missing_optimizations
from slimvl.cli import main
from slimvl.config import PRESET_NAMES, Recipe, preset
from slimvl.data import QUESTION_TYPES
from slimvl.demo import N_QUESTIONS, RECIPES, run_demo
from slimvl.errors import InputError
from slimvl.models.loader import load_model
from slimvl.models.weights import weight_bytes

RUN_KEYS = {"answer", "stages_ms", "decode_tokens_per_s", "peak_rss_mb", "metrics", "model", "recipe"}


def _run_args(checkpoint: Path, image: Path, *extra: str) -> list[str]:
    return [
        "run",
        str(checkpoint),
        "--image",
        str(image),
        "--prompt",
        "What color?",
        "--max-new-tokens",
        "4",
        *extra,
    ]


def _one_json(text: str) -> dict:
    """Parse stdout that must hold exactly one JSON object and nothing else."""
    record = json.loads(text)
    assert isinstance(record, dict)
    return record


def test_run_prints_answer_and_stages(
    small_checkpoint: Path, image_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*_run_args(small_checkpoint, image_file), "--json"]) == 0
    answer = _one_json(capsys.readouterr().out)["answer"]

    assert main(_run_args(small_checkpoint, image_file)) == 0
    out = capsys.readouterr().out
    assert answer in out
    for stage in ("preprocess", "vision", "prefill", "decode", "time to first token"):
        assert stage in out


def test_run_json(
    small_checkpoint: Path,
    image_file: Path,
    tall_image: Image.Image,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    tall = tmp_path / "tall.png"
    tall_image.save(tall)
    assert (
        main([*_run_args(small_checkpoint, image_file), "--image", str(tall), "--json", "--dtype", "bf16"])
        == 0
    )
    record = _one_json(capsys.readouterr().out)
    assert RUN_KEYS <= set(record)
    assert record["model"] == str(small_checkpoint) and record["recipe"] == "none"
    assert set(record["stages_ms"]) == {"preprocess", "vision", "sparsify", "prefill", "decode"}
    assert record["peak_rss_mb"] > 0
    metrics = record["metrics"]
    assert metrics["visual_tokens"] == 196 + 160
    assert 1 <= metrics["new_tokens"] <= 4
    assert metrics["stages_ms"] == record["stages_ms"] and metrics["ttft_ms"] > 0


def test_run_json_subprocess_stdout_is_clean(small_checkpoint: Path, image_file: Path) -> None:
    """`python -m slimvl` works, and nothing but the JSON object reaches stdout."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "slimvl",
            *_run_args(small_checkpoint, image_file, "--threads", "1", "--json"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert RUN_KEYS <= set(_one_json(done.stdout))
    assert done.stdout.count("\n") == 1
    assert "Loading weights" not in done.stderr  # progress bars are silenced


def test_info_json_totals(small_checkpoint: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", str(small_checkpoint), "--json"]) == 0
    record = _one_json(capsys.readouterr().out)
    model = load_model(str(small_checkpoint)).model
    assert record["total"] == {
        "params": sum(p.numel() for p in model.parameters()),
        "bytes": weight_bytes(model),
    }
    assert record["by_dtype"] == {"float32": record["total"]}
    assert set(record["groups"]) == {"vision", "decoder layers", "embeddings/lm_head"}
    assert 0 < record["decode_bytes_per_token"] < record["total"]["bytes"]


def test_info_table(small_checkpoint: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", str(small_checkpoint)]) == 0
    out = capsys.readouterr().out
    assert "decoder layers" in out and "total" in out and "float32" in out


@pytest.mark.slow
def test_info_2b_shape(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "builtin:2b-shape", "--dtype", "bf16", "--json"]) == 0
    assert _one_json(capsys.readouterr().out)["by_dtype"]["bfloat16"]["params"] > 2_000_000_000


def test_recipe_show_round_trips(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["recipe", "show", "laptop"]) == 0
    assert Recipe.from_yaml(capsys.readouterr().out) == preset("laptop")


def test_recipe_show_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "mine.json"
    Recipe(name="mine", sparsification=preset("sparsify").sparsification).save(path)
    assert main(["recipe", "show", str(path)]) == 0
    assert Recipe.from_yaml(capsys.readouterr().out) == Recipe.load(path)


def test_recipe_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["recipe", "list"]) == 0
    assert capsys.readouterr().out.split() == list(PRESET_NAMES)


def _write(path: Path, text: str | bytes) -> Path:
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


# case -> (the options it changes in a good `run` call, a fragment of its error message)
BAD_INPUTS: dict[str, tuple[Callable[[Path], list[str]], str]] = {
    "missing image": (lambda tmp: ["--image", str(tmp / "nope.png")], "image not found"),
    "corrupt image": (
        lambda tmp: ["--image", str(_write(tmp / "x.png", b"\x89PNG garbage" * 10))],
        "cannot read image",
    ),
    "empty prompt": (lambda tmp: ["--prompt", "  "], "the prompt is empty"),
    "unknown model": (lambda tmp: ["--model", "builtin:nope"], "unknown model 'builtin:nope'"),
    "unknown recipe key": (
        lambda tmp: ["--recipe", str(_write(tmp / "r.yaml", "int8:\n  bogus: 1\n"))],
        "unknown key 'bogus'",
    ),
    "bad sparsity ratio": (
        lambda tmp: ["--recipe", str(_write(tmp / "r.yaml", "sparsification:\n  sparsity_ratio: 1.5\n"))],
        "sparsity_ratio: got 1.5",
    ),
    "invalid yaml": (
        lambda tmp: ["--recipe", str(_write(tmp / "r.yaml", "int8: [unclosed\n"))],
        "invalid YAML",
    ),
    "unknown recipe": (lambda tmp: ["--recipe", "turbo"], "unknown recipe 'turbo'"),
}


def _bad_run_args(case: str, checkpoint: Path, image: Path, tmp_path: Path) -> list[str]:
    options = {"--model": str(checkpoint), "--image": str(image), "--prompt": "What color?"}
    override = BAD_INPUTS[case][0](tmp_path)
    options.update(zip(override[::2], override[1::2], strict=True))
    model = options.pop("--model")
    return ["run", model, *(item for pair in options.items() for item in pair)]


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_line_and_exit_2(
    case: str,
    small_checkpoint: Path,
    image_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if case != "unknown model":  # every other check happens before the model loads

        def must_not_load(*args: object, **kwargs: object) -> None:
            raise AssertionError("the model was loaded although the request was invalid")

        monkeypatch.setattr(api, "load_model", must_not_load)
    assert main(_bad_run_args(case, small_checkpoint, image_file, tmp_path)) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("slimvl: error: ")
    assert BAD_INPUTS[case][1] in captured.err
    assert captured.err.count("\n") == 1 and "Traceback" not in captured.err


def test_recipe_not_built_is_a_user_error(
    small_checkpoint: Path,
    image_file: Path,
    capsys: pytest.CaptureFixture[str],
    not_built,
) -> None:
    not_built("int8")
    assert main([*_run_args(small_checkpoint, image_file), "--recipe", "int8"]) == 2
    assert capsys.readouterr().err.startswith("slimvl: error: recipe 'int8' asks for int8")


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_propagates(where: str, small_checkpoint: Path, tmp_path: Path) -> None:
    args = _run_args(small_checkpoint, tmp_path / "nope.png")
    with pytest.raises(InputError, match="image not found"):
        main(["--debug", *args] if where == "before" else [*args, "--debug"])


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["run"],
        ["run", "m", "--prompt", "q"],
        ["frobnicate"],
        ["run", "m", "--image", "x", "--prompt", "q", "--max-new-tokens", "0"],
        ["recipe"],
    ],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert "usage: slimvl" in capsys.readouterr().err


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "demo" in capsys.readouterr().out


def test_demo_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_demo(out_dir=tmp_path / "demo", accuracy_n=6) == 0
    out = capsys.readouterr().out
    assert len(list((tmp_path / "demo").glob("*.png"))) == N_QUESTIONS
    built = [r for r in RECIPES if not missing_optimizations(preset(r))]
    assert out.count("question:") == out.count("expected:") == N_QUESTIONS * len(built)
    assert all(recipe in out for recipe in RECIPES)
    if missing_optimizations(preset("laptop")):
        assert "not built: " in out


def test_demo_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--out", str(tmp_path), "--n", "4"]) == 0
    assert "expected:" in capsys.readouterr().out


def test_eval_json_with_a_baseline_reports_the_paired_comparison(
    small_checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["eval", str(small_checkpoint), "--recipe", "int8", "--baseline", "none", "--n", "3", "--json"]
    assert main([*args, "--split", "val", "--threads", "1"]) == 0
    record = _one_json(capsys.readouterr().out)
    assert record["n"] == 3 and 0 <= record["accuracy"] <= 1 and set(record["by_type"]) <= set(QUESTION_TYPES)
    assert record["baseline"]["recipe"] == "none" and record["baseline"]["n"] == 3
    assert record["paired_difference"]["n"] == 3
    assert 0 <= record["next_token"]["top1_agreement"] <= 1 and record["next_token"]["mean_kl"] >= 0
