import math

import pytest
import torch

from slimvl.eval import (
    EvalResult,
    next_token_agreement,
    normalize_answer,
    paired_difference,
    wilson_interval,
)


def test_wilson_interval_known_values() -> None:
    low, high = wilson_interval(95, 100)
    assert math.isclose(low, 0.8882, abs_tol=1e-3) and math.isclose(high, 0.9785, abs_tol=1e-3)
    assert wilson_interval(0, 10)[0] == 0.0
    assert wilson_interval(10, 10)[1] == pytest.approx(1.0)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_normalize_answer() -> None:
    assert normalize_answer("  Red. ") == "red"
    assert normalize_answer("yes!") == "yes"


def _result(correct: list[bool], qtypes: list[str]) -> EvalResult:
    return EvalResult("test", len(correct), False, correct, qtypes, {"color": 0.2, "overall": 0.25})


def test_result_by_type_and_dict() -> None:
    result = _result([True, False, True, True], ["color", "color", "shape", "shape"])
    assert result.accuracy == 0.75
    by_type = result.by_type()
    assert by_type["color"]["accuracy"] == 0.5 and by_type["color"]["n"] == 2
    assert by_type["color"]["majority_baseline"] == 0.2
    assert by_type["shape"]["majority_baseline"] is None
    record = result.to_dict()
    assert set(record) >= {"accuracy", "n", "by_type", "ci95"}
    assert record["majority_baseline"] == 0.25


def test_paired_difference() -> None:
    a = _result([True, True, False, False], ["color"] * 4)
    b = _result([True, False, True, True], ["color"] * 4)
    diff = paired_difference(a, b)
    assert diff["delta"] == pytest.approx(0.25)
    assert diff["ci95"][0] < 0.25 < diff["ci95"][1]
    with pytest.raises(ValueError, match="same questions"):
        paired_difference(a, _result([True], ["color"]))


def test_next_token_agreement_counts_argmax_matches_and_kl() -> None:
    p = torch.log_softmax(torch.tensor([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0]]), dim=-1)
    q = torch.log_softmax(torch.tensor([[2.0, 0.0, 0.0], [2.0, 0.0, 0.0]]), dim=-1)
    reference = EvalResult("test", 2, False, [True, True], ["color", "shape"], {}, p)
    candidate = EvalResult("test", 2, False, [True, False], ["color", "shape"], {}, q)
    out = next_token_agreement(reference, candidate)
    assert out["top1_agreement"] == 0.5
    assert out["mean_kl"] == pytest.approx(float((p[1].exp() * (p[1] - q[1])).sum()) / 2)
    assert next_token_agreement(reference, reference)["mean_kl"] == 0.0
    with pytest.raises(ValueError, match="keep_logprobs"):
        next_token_agreement(_result([True], ["color"]), candidate)
