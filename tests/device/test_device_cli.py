from __future__ import annotations

import json
from pathlib import Path

import pytest

from slimvl.cli import main


def _run(checkpoint: Path, image: Path, *extra: str) -> list[str]:
    return ["run", str(checkpoint), "--image", str(image), "--prompt", "Color?", *extra]


def test_cuda_on_a_machine_without_one_is_a_one_line_error(
    small_checkpoint: Path, image_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(_run(small_checkpoint, image_file, "--device", "cuda")) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("slimvl: error: --device cuda: ") and "\n" not in err


def test_auto_says_what_it_chose(small_checkpoint: Path, image_file: Path, capsys) -> None:
    assert main(_run(small_checkpoint, image_file, "--max-new-tokens", "2", "--json")) == 0
    captured = capsys.readouterr()
    assert "slimvl: device: cpu (auto: " in captured.err
    json.loads(captured.out)  # the answer's JSON stays clean


def test_gpu_layers_without_a_gpu_names_the_option(small_checkpoint: Path, capsys) -> None:
    assert main(["info", str(small_checkpoint), "--gpu-layers", "2"]) == 2
    assert "--gpu-layers: needs a GPU" in capsys.readouterr().err


def test_info_plans_a_simulated_gpu(small_checkpoint: Path, capsys) -> None:
    assert main(["info", str(small_checkpoint), "--simulate-gpu", "6.1:2GB", "--json"]) == 0
    device = json.loads(capsys.readouterr().out)["device"]
    assert device["placement"]["vision_on_gpu"] and device["placement"]["device"] == "cuda:0"
    assert "fp16 storage only" in device["rules"]
    assert main(["info", str(small_checkpoint), "--simulate-gpu", "a lot"]) == 2
