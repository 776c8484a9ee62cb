from collections import Counter, defaultdict

import pytest

from slimvl.data import (
    ANSWER_VOCABULARY,
    QUESTION_TYPES,
    SPLITS,
    examples,
    majority_accuracy,
    majority_baseline,
    make_example,
)


def test_splits_are_disjoint():
    assert {"train", "val", "test"} <= set(SPLITS)
    ranges = sorted(SPLITS.values(), key=lambda r: r.start)
    for lower, upper in zip(ranges, ranges[1:], strict=False):
        assert lower.step == 1 and lower.stop <= upper.start


def test_examples_take_the_first_seeds_of_the_split():
    got = list(examples("val", 3, size=(128, 128)))
    assert [ex.seed for ex in got] == [1_000_000, 1_000_001, 1_000_002]
    assert got[0].image.tobytes() == make_example(1_000_000, (128, 128)).image.tobytes()
    assert list(examples("test", 0)) == []


def test_unknown_split_names_the_allowed_ones():
    with pytest.raises(ValueError, match="train.*val.*test"):
        examples("dev")
    with pytest.raises(ValueError):
        examples("val", 10_001)


@pytest.fixture(scope="module")
def train_sample():
    return list(examples("train", 2000, size=(128, 128)))


def test_answer_distribution_is_balanced(train_sample):
    answers: dict[str, Counter[str]] = defaultdict(Counter)
    for ex in train_sample:
        assert ex.answer in ANSWER_VOCABULARY
        answers[ex.qtype][ex.answer] += 1
    assert set(answers) == set(QUESTION_TYPES)
    assert answers["count"]["zero"] > 0
    baseline = majority_baseline(train_sample)
    for qtype, (answer, share) in baseline.items():
        top_count = answers[qtype].most_common(1)[0][1]
        assert answers[qtype][answer] == top_count and share == top_count / answers[qtype].total()
        assert share <= (0.55 if qtype in ("exists", "position") else 0.4), (qtype, answers[qtype])


def test_majority_accuracy(train_sample):
    test_sample = list(examples("test", 600, size=(128, 128)))
    accuracy = majority_accuracy(train_sample, test_sample)
    assert set(accuracy) == {*QUESTION_TYPES, "overall"}
    assert 0.1 < accuracy["overall"] < 0.4
    baseline = majority_baseline(train_sample)
    for qtype in QUESTION_TYPES:
        of_type = [ex for ex in test_sample if ex.qtype == qtype]
        expected = sum(ex.answer == baseline[qtype][0] for ex in of_type) / len(of_type)
        assert accuracy[qtype] == pytest.approx(expected)


def test_question_answers_match_the_rendered_examples() -> None:
    from slimvl.data import examples, question_answers

    light = question_answers("val", 40)
    full = list(examples("val", 40))
    assert [(q.qtype, q.answer) for q in light] == [(e.qtype, e.answer) for e in full]
