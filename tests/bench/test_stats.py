import pytest

from slimvl.bench.stats import Summary, paired_ratio, ratio, summarize, summarize_runs


def test_summarize_odd_count() -> None:
    assert summarize([3.0, 1.0, 2.0]) == Summary(median=2.0, min=1.0, max=3.0, n=3)


def test_summarize_even_count_takes_mean_of_middle_two() -> None:
    summary = summarize([4, 1, 3, 10])
    assert summary is not None
    assert summary.median == pytest.approx(3.5)
    assert (summary.min, summary.max, summary.n) == (1.0, 10.0, 4)


def test_summarize_skips_unmeasured_values() -> None:
    assert summarize([None, 5.0, None]) == Summary(5.0, 5.0, 5.0, 1)
    assert summarize([None, None]) is None
    assert summarize([]) is None


def test_summarize_runs_treats_missing_keys_as_unmeasured() -> None:
    runs = [{"e2e_s": 2.0, "vision_ms": 10.0}, {"e2e_s": 4.0}, {"e2e_s": 3.0, "vision_ms": None}]
    out = summarize_runs(runs, ["e2e_s", "vision_ms", "prefill_ms"])
    assert out["e2e_s"] == Summary(3.0, 2.0, 4.0, 3)
    assert out["vision_ms"] == Summary(10.0, 10.0, 10.0, 1)
    assert out["prefill_ms"] is None


def test_ratio() -> None:
    assert ratio(3.0, 2.0) == 1.5
    assert ratio(None, 2.0) is None
    assert ratio(1.0, None) is None
    assert ratio(1.0, 0.0) is None


def test_paired_ratio_divides_within_each_round_not_the_medians() -> None:
    # The machine slowed down in round 2: each round's ratio is 0.5, the medians' ratio is not.
    runs = [
        {"wave": 1, "run": 1, "ttft_ms": 100.0},
        {"wave": 1, "run": 2, "ttft_ms": 300.0},
        {"wave": 1, "run": 3, "ttft_ms": 110.0},
    ]
    base = [
        {"wave": 1, "run": 2, "ttft_ms": 600.0},
        {"wave": 1, "run": 1, "ttft_ms": 200.0},
        {"wave": 1, "run": 3, "ttft_ms": 220.0},
    ]
    assert paired_ratio(runs, base, "ttft_ms") == Summary(0.5, 0.5, 0.5, 3)


def test_paired_ratio_pairs_only_the_same_wave_and_round_with_values() -> None:
    runs = [
        {"wave": 1, "run": 1, "prefill_ms": 60.0},
        {"wave": 1, "run": 2, "prefill_ms": None},
        {"wave": 2, "run": 3, "prefill_ms": 10.0},
    ]
    base = [
        {"wave": 1, "run": 1, "prefill_ms": 100.0},
        {"wave": 1, "run": 2, "prefill_ms": 100.0},
        {"wave": 1, "run": 3, "prefill_ms": 100.0},
    ]
    assert paired_ratio(runs, base, "prefill_ms") == Summary(0.6, 0.6, 0.6, 1)
    assert paired_ratio(runs, [], "prefill_ms") is None
