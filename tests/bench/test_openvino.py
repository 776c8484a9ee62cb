"""The OpenVINO row's plumbing (export cache, worker protocol, metrics) against a fake venv and fake GenAI."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from slimvl.bench.driver import RowResult, run_interleaved
from slimvl.bench.rows import peer_row, worker_argv
from slimvl.bench.scenario import Scenario
from slimvl.monitor.metric_table import run_keys

FAKE_OPTIMUM_CLI = """#!/bin/sh
for out; do :; done
mkdir -p "$out"
echo xml > "$out/openvino_language_model.xml"
head -c 1000 /dev/zero > "$out/openvino_language_model.bin"
head -c 500 /dev/zero > "$out/openvino_vision_embeddings_model.bin"
"""
FAKE_OPENVINO = """
class Tensor:
    def __init__(self, array):
        assert array.dtype.name == "uint8" and array.shape == (1, 448, 448, 3)
"""
FAKE_GENAI = """
class _Pair:
    def __init__(self, mean):
        self.mean = mean

class _Metrics:
    def __init__(self, n, pruning_ratio, precision):
        self.n, self.pruning_ratio, self.precision = n, pruning_ratio, precision
    def get_num_generated_tokens(self): return self.n
    def get_num_input_tokens(self): return 30
    def get_ttft(self): return _Pair(50.0 - self.pruning_ratio / 2)  # pruning shortens the prefill
    def get_tpot(self): return _Pair(20.0 if self.precision == "f32" else 10.0)  # f32: slower
    def get_prepare_embeddings_duration(self): return _Pair(20.0)

class _Result:
    def __init__(self, n, pruning_ratio, precision):
        self.perf_metrics = _Metrics(n, pruning_ratio, precision)

class GenerationConfig:
    pass

class VLMPipeline:
    def __init__(self, path, device, **properties):
        import sys
        assert not [name for name in sys.modules if name.split(".")[0] == "slimvl"], "worker imported slimvl"
        assert device == "CPU" and properties.pop("INFERENCE_NUM_THREADS") == 1
        self.precision = properties.pop("INFERENCE_PRECISION_HINT", None)
        assert not properties
    def generate(self, prompt, images, generation_config):
        config = generation_config
        assert config.ignore_eos and config.min_new_tokens == config.max_new_tokens and not config.do_sample
        return _Result(config.max_new_tokens, config.pruning_ratio, self.precision)
"""


@pytest.fixture
def fake_venv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    for name, text in (
        ("python", f'#!/bin/sh\nexec "{sys.executable}" "$@"\n'),
        ("optimum-cli", FAKE_OPTIMUM_CLI),
    ):
        (venv / "bin" / name).write_text(text)
        (venv / "bin" / name).chmod(0o755)
    modules = tmp_path / "modules"
    (modules / "openvino").mkdir(parents=True)
    (modules / "openvino" / "__init__.py").write_text(FAKE_OPENVINO)
    (modules / "openvino_genai.py").write_text(FAKE_GENAI)
    monkeypatch.setenv("SLIMVL_OPENVINO_VENV", str(venv))
    monkeypatch.setenv("SLIMVL_CACHE", str(tmp_path / "cache"))
    return modules


def _run_peer(peer: str, fake_venv: Path, checkpoint: Path, tmp_path: Path):
    images = Scenario(max_new_tokens=4).write_images(tmp_path, runs=2)
    row = peer_row(str(checkpoint), peer)
    spec = {
        **row.to_dict(),
        "threads": 1,
        "question": "q?",
        "max_new_tokens": 4,
        "warmup_image": str(images[0]),
    }
    env = {**os.environ, "PYTHONPATH": str(fake_venv)}
    results = [RowResult(row)]
    run_interleaved(results, lambda r: (worker_argv(r, spec), env), images, lambda _: None, tmp_path)
    return results[0], row, spec


def test_openvino_row_through_the_worker(fake_venv: Path, small_checkpoint: Path, tmp_path: Path) -> None:
    result, row, spec = _run_peer("openvino-int8", fake_venv, small_checkpoint, tmp_path)
    assert result.status == "ok", result.error
    assert result.ready["weight_bytes"] == 1500 and result.ready["decode_weight_bytes"] == 1000
    assert isinstance(result.ready["export_s"], float)
    assert len(result.runs) == 2
    for run in result.runs:
        assert set(run_keys()) <= set(run)
        assert (run["ttft_ms"], run["vision_ms"], run["prefill_ms"]) == (50.0, 20.0, None)
        assert run["decode_tok_s"] == pytest.approx(100.0)
        assert run["achieved_gbps"] == pytest.approx(1000 * 100.0 / 1e9)
        assert run["new_tokens"] == 4 and run["cpu_s_per_token"] == pytest.approx(run["cpu_s"] / 4)
    # the export is cached: a second launch does not export again
    assert json.loads(worker_argv(row, spec)[-1])["export_s"] is None


def test_the_pruning_peer_asks_openvino_to_prune(
    fake_venv: Path, small_checkpoint: Path, tmp_path: Path
) -> None:
    result, _, _ = _run_peer("openvino-int8-prune60", fake_venv, small_checkpoint, tmp_path)
    assert result.status == "ok", result.error
    assert [run["ttft_ms"] for run in result.runs] == [20.0, 20.0]  # the fake's TTFT: 50 - 60 / 2


def test_the_f32_peer_asks_openvino_for_f32_activations(
    fake_venv: Path, small_checkpoint: Path, tmp_path: Path
) -> None:
    runs = {}
    for peer in ("openvino-int8", "openvino-int8-f32"):
        (tmp_path / peer).mkdir()
        runs[peer], _, _ = _run_peer(peer, fake_venv, small_checkpoint, tmp_path / peer)
    default, f32 = runs["openvino-int8"], runs["openvino-int8-f32"]
    assert default.status == f32.status == "ok", (default.error, f32.error)
    assert [run["decode_tok_s"] for run in default.runs] == pytest.approx([100.0, 100.0])
    assert [run["decode_tok_s"] for run in f32.runs] == pytest.approx([50.0, 50.0])  # the fake's f32 speed
