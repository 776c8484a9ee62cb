"""A real, small `slimvl bench` run: slimvl (recipe none) beside hf-fp32 and two peers that cannot run here."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

import pytest

from slimvl.cli import main
from slimvl.monitor.metric_table import summary_keys

TINY = ["--runs", "2", "--max-new-tokens", "4", "--threads", "1", "--bandwidth-bytes", "64000000"]
NUMBER = (int, float)


@pytest.fixture(scope="module")
def bench(small_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("bench")
    stdout = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(stdout):
        patch.setenv("SLIMVL_OPENVINO_VENV", str(out / "no-such-venv"))
        code = main(
            [
                *("bench", str(small_checkpoint), "--recipe", "none"),
                *("--peers", "hf-fp32,openvino-int8", *TINY),
                *(
                    "--json-out",
                    str(out / "r.json"),
                    "--md-out",
                    str(out / "r.md"),
                    "--plot",
                    str(out / "r.png"),
                ),
            ]
        )
    return {
        "code": code,
        "stdout": stdout.getvalue(),
        "out": out,
        "report": json.loads((out / "r.json").read_text()),
    }


def test_exit_code_and_table(bench: dict[str, Any]) -> None:
    assert bench["code"] == 0
    for text in ("slimvl:none", "hf-fp32", "openvino-int8", "not runnable", "decode tok/s", "read bandwidth"):
        assert text in bench["stdout"]


def test_json_schema(bench: dict[str, Any]) -> None:
    report = bench["report"]
    assert report["schema_version"] == 1 and report["runs"] == 2 and report["threads"] == 1
    machine = report["machine"]
    assert isinstance(machine["read_bandwidth_gbps"], float) and machine["read_bandwidth_gbps"] > 0
    assert machine["read_bandwidth"]["size_bytes"] == 64000000
    samples = machine["read_bandwidth"]["samples_gbps"]
    assert len(samples) == 3  # before the runs, and before each of the 2 rounds
    assert machine["read_bandwidth_gbps"] == pytest.approx(sorted(samples)[1])
    assert isinstance(machine["cpu_model"], str) and isinstance(machine["isa_flags"], list)
    assert report["profile"]["name"] == "native" and isinstance(report["energy_note"], str)
    assert report["scenario"]["max_new_tokens"] == 4 and report["scenario"]["ignore_eos"] is True
    assert len(set(report["scenario"]["image_seeds"])) == 3  # warm-up + 2 runs, each its own image
    rows = {row["name"]: row for row in report["rows"]}
    assert list(rows) == ["slimvl:none", "hf-fp32", "openvino-int8"]
    for name in ("slimvl:none", "hf-fp32"):
        row = rows[name]
        assert row["status"] == "ok" and row["error"] is None and row["runs"] == 2
        assert isinstance(row["weight_bytes"], int) and row["weight_bytes"] > 0
        for key in summary_keys():
            if key in ("energy_j_per_token", "gpu_peak_mb") and row[key] is None:
                continue  # no readable energy counter here; no GPU
            assert isinstance(row[key], NUMBER), (name, key)
            assert row[f"{key}_min"] <= row[key] <= row[f"{key}_max"]
        assert row["ttft_ms"] >= row["vision_ms"] + row["prefill_ms"] - 1e-6
        assert [run["new_tokens"] for run in row["per_run"]] == [4, 4]
        assert row["achieved_gbps"] == pytest.approx(row["decode_weight_bytes"] * row["decode_tok_s"] / 1e9)
        for run in row["per_run"]:  # each run against the bandwidth sampled before its round
            assert run["read_bandwidth_gbps"] in machine["read_bandwidth"]["samples_gbps"][1:]
            assert run["bandwidth_pct"] == pytest.approx(
                100 * run["achieved_gbps"] / run["read_bandwidth_gbps"]
            )
    # hf-fp32 loads the same weights as slimvl
    assert rows["hf-fp32"]["weight_bytes"] == rows["slimvl:none"]["weight_bytes"]


def test_a_peer_that_cannot_run_is_reported_not_hidden(bench: dict[str, Any]) -> None:
    row = next(row for row in bench["report"]["rows"] if row["name"] == "openvino-int8")
    assert row["status"] == "not runnable"
    assert "scripts/setup_openvino.sh" in row["error"]
    assert row["runs"] == 0 and row["e2e_s"] is None and row["per_run"] == []


def test_runs_were_interleaved(bench: dict[str, Any]) -> None:
    order = [(o["row"], o["run"]) for o in bench["report"]["run_order"]]
    assert order == [("slimvl:none", 1), ("hf-fp32", 1), ("hf-fp32", 2), ("slimvl:none", 2)]


def test_paired_ratios_divide_the_runs_of_each_round(bench: dict[str, Any]) -> None:
    rows = {row["name"]: row for row in bench["report"]["rows"]}
    paired = {(entry["row"], entry["baseline"]): entry for entry in bench["report"]["paired"]}
    assert set(paired) == {("slimvl:none", "hf-fp32"), ("hf-fp32", "slimvl:none")}  # not the peer that failed
    entry = paired[("hf-fp32", "slimvl:none")]
    ratios = sorted(
        hf["ttft_ms"] / ours["ttft_ms"]
        for hf, ours in zip(rows["hf-fp32"]["per_run"], rows["slimvl:none"]["per_run"], strict=True)
    )
    assert all(run["wave"] == 1 for row in rows.values() for run in row["per_run"])
    assert entry["ttft_ms_rounds"] == 2
    assert (entry["ttft_ms_min"], entry["ttft_ms_max"]) == pytest.approx(tuple(ratios))
    assert entry["ttft_ms"] == pytest.approx(sum(ratios) / 2)


def test_markdown_and_png_written(bench: dict[str, Any]) -> None:
    markdown = (bench["out"] / "r.md").read_text()
    assert "| slimvl:none | ok |" in markdown and "openvino-int8" in markdown and "not runnable" in markdown
    assert "## Paired ratios" in markdown and "| hf-fp32 | slimvl:none | 2 |" in markdown
    assert (bench["out"] / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(bench["out"].glob(".*.tmp"))  # atomic writes leave no temporary file


def test_a_broken_checkpoint_fails_its_row_with_the_error(
    small_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    for path in small_checkpoint.iterdir():
        data = path.read_bytes()
        (broken / path.name).write_bytes(data[:100] if path.suffix == ".safetensors" else data)
    code = main(["bench", str(broken), *TINY, "--json-out", str(tmp_path / "r.json")])
    assert code == 1  # no row succeeded
    row = json.loads((tmp_path / "r.json").read_text())["rows"][0]
    assert row["status"] == "failed" and "cannot load checkpoint" in row["error"]
    assert "slimvl:none: failed" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--peers", "hf-fp32,nope"], "unknown peer nope"),
        (["--recipe", "no-such-recipe"], "unknown recipe"),
    ],
)
def test_user_errors(small_checkpoint: Path, args: list[str], message: str, capsys) -> None:
    assert main(["bench", str(small_checkpoint), *args]) == 2
    assert message in capsys.readouterr().err


def test_missing_model_is_a_user_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", str(tmp_path / "missing")]) == 2
    assert "model not found" in capsys.readouterr().err
