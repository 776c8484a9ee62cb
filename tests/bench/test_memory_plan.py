"""Peak-memory estimates that decide which bench rows stay resident together."""

from __future__ import annotations

import json
from pathlib import Path

from slimvl.bench.memory_plan import OVERHEAD_BYTES, estimated_peak_bytes, parameter_count
from slimvl.bench.rows import peer_row, slimvl_row
from slimvl.config import preset
from slimvl.models.loader import tiny_path
from slimvl.optimized import MANIFEST


def test_parameter_count_matches_the_shipped_tiny_model() -> None:
    recorded = json.loads((tiny_path() / "training.json").read_text())["params"]
    assert parameter_count("builtin:tiny") == recorded


def test_a_2b_model_is_counted_at_its_real_size() -> None:
    assert 2.0e9 < parameter_count("builtin:2b-shape") < 2.3e9


def test_estimates_follow_the_precision_each_row_loads() -> None:
    params = parameter_count("builtin:2b-shape")
    fp32 = estimated_peak_bytes(peer_row("builtin:2b-shape", "hf-fp32"))
    bf16 = estimated_peak_bytes(peer_row("builtin:2b-shape", "hf-bf16"))
    ov_int8 = estimated_peak_bytes(peer_row("builtin:2b-shape", "openvino-int8"))
    assert fp32 == int(4 * params + OVERHEAD_BYTES["hf"])
    assert bf16 == int(2 * params + OVERHEAD_BYTES["hf"])
    assert ov_int8 == int(params + OVERHEAD_BYTES["openvino"])
    assert estimated_peak_bytes(slimvl_row("builtin:2b-shape", preset("none"))) == fp32


def test_an_optimized_directory_is_estimated_from_what_it_stores(tmp_path: Path) -> None:
    (tmp_path / MANIFEST).write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"\0" * 1000)
    row = slimvl_row(str(tmp_path), preset("none"))
    assert estimated_peak_bytes(row) == int(1000 + 2 + OVERHEAD_BYTES["slimvl"])
