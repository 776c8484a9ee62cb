import json

import pytest

from slimvl.monitor import RequestMetrics

STAGES = {"preprocess": 10.0, "vision": 100.0, "sparsify": 0.0, "prefill": 200.0, "decode": 1000.0}

TO_DICT_KEYS = {
    "stages_ms",
    "vision_ms",
    "prefill_ms",
    "ttft_ms",
    "decode_tok_s",
    "e2e_s",
    "peak_rss_mb",
    "mean_rss_mb",
    "weight_bytes",
    "cpu_s_per_token",
    "achieved_gbps",
    "energy_j",
    "energy_note",
    "new_tokens",
    "prompt_tokens",
    "visual_tokens",
    "visual_tokens_kept",
    "cpu_percent",
    "freq_mhz",
    "threads",
}


def _metrics(**overrides: object) -> RequestMetrics:
    values: dict[str, object] = {
        "stages_ms": dict(STAGES),
        "new_tokens": 11,
        "cpu_s": 2.2,
        "wall_s": 1.5,
        "decode_weight_bytes_per_token": 2_000_000_000,
        "peak_rss_bytes": 3_000_000_000,
        "mean_rss_bytes": 2_500_000_000,
    }
    values.update(overrides)
    return RequestMetrics(**values)  # type: ignore[arg-type]


def test_derived_values() -> None:
    m = _metrics(energy_j=22.0)
    assert m.ttft_ms == pytest.approx(310.0)
    assert m.vision_ms == 100.0
    assert m.prefill_ms == 200.0
    assert m.decode_tokens == 10
    assert m.decode_tok_s == pytest.approx(10.0)
    assert m.achieved_gbps == pytest.approx(20.0)
    assert m.cpu_s_per_token == pytest.approx(0.2)
    assert m.energy_j_per_token == pytest.approx(2.0)
    assert m.e2e_s == 1.5


def test_ttft_counts_missing_stages_as_zero() -> None:
    assert _metrics(stages_ms={"prefill": 50.0, "decode": 10.0}).ttft_ms == 50.0


@pytest.mark.parametrize(
    "overrides",
    [
        {"new_tokens": 1},  # the only token came from prefill
        {"new_tokens": 0},
        {"stages_ms": {"prefill": 5.0}},  # no decode stage timed
    ],
)
def test_no_decode_rate_without_decode_tokens(overrides: dict[str, object]) -> None:
    m = _metrics(**overrides)
    assert m.decode_tok_s is None
    assert m.achieved_gbps is None


def test_none_cases() -> None:
    assert _metrics(energy_j=None).energy_j_per_token is None
    assert _metrics(new_tokens=0).cpu_s_per_token is None
    assert _metrics(new_tokens=0, energy_j=5.0).energy_j_per_token is None
    assert _metrics(decode_weight_bytes_per_token=0).achieved_gbps is None


def test_to_dict_keys_and_json() -> None:
    d = _metrics(energy_j=None, energy_note="RAPL not readable here", threads=4).to_dict()
    assert TO_DICT_KEYS <= d.keys()
    assert d["peak_rss_mb"] == pytest.approx(3000.0)
    assert d["freq_mhz"] == {"min": None, "mean": None, "max": None}
    assert d["ttft_ms"] == pytest.approx(310.0)
    assert json.loads(json.dumps(d)) == d
