"""Examples from seeds, disjoint seed splits, and the majority-answer baseline."""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from PIL import Image

from slimvl.data.questions import BUILDERS, QUESTION_TYPES
from slimvl.data.render import render_scene
from slimvl.data.scene import SceneObject, check_size
from slimvl.errors import InputError

SPLITS: dict[str, range] = {
    "train": range(0, 1_000_000),
    "val": range(1_000_000, 1_010_000),
    "test": range(2_000_000, 2_010_000),
}


@dataclass
class VQAExample:
    """One question about one rendered scene; objects is the ground truth the answer derives from."""

    image: Image.Image
    question: str
    answer: str
    qtype: str
    seed: int
    objects: list[SceneObject]


@dataclass(frozen=True)
class QuestionAnswer:
    """What a baseline that never looks at the image needs of an example."""

    qtype: str
    answer: str


def make_example(seed: int, size: tuple[int, int] = (448, 448)) -> VQAExample:
    """The example for seed: always the same image bytes, question and answer. size is (width, height)."""
    size = check_size(size)
    rng = random.Random(seed)
    qtype, (objects, question, answer) = _draw_question(rng, size)
    image = render_scene(objects, size, rng)
    return VQAExample(image, question, answer, qtype, seed, objects)


def _draw_question(rng: random.Random, size: tuple[int, int]):
    """Question type, then scene, question and answer: drawn from rng before the image is."""
    qtype = rng.choice(QUESTION_TYPES)
    return qtype, BUILDERS[qtype](rng, size)


def question_type(seed: int, size: tuple[int, int] = (448, 448)) -> str:
    """The question type of seed's example, without drawing its image."""
    return _draw_question(random.Random(seed), check_size(size))[0]


def question_answers(split: str, n: int, size: tuple[int, int] = (448, 448)) -> list[QuestionAnswer]:
    """Type and answer of the first n examples of split, without drawing their images (the answers are
    drawn from the seed before the image is, so they are those of `examples`)."""
    size = check_size(size)
    out = []
    for seed in SPLITS[split][:n]:
        qtype, (_, _, answer) = _draw_question(random.Random(seed), size)
        out.append(QuestionAnswer(qtype, answer))
    return out


def examples(split: str, n: int | None = None, size: tuple[int, int] = (448, 448)) -> Iterator[VQAExample]:
    """The examples of the first n seeds of split (all of them when n is None)."""
    if split not in SPLITS:
        raise InputError(f"split: got {split!r}, allowed: {', '.join(SPLITS)}")
    seeds = SPLITS[split]
    if n is not None:
        if not 0 <= n <= len(seeds):
            raise InputError(f"n: got {n}, allowed: 0..{len(seeds)} for split {split!r}")
        seeds = seeds[:n]
    size = check_size(size)
    return (make_example(seed, size) for seed in seeds)


def majority_baseline(examples: Iterable[VQAExample | QuestionAnswer]) -> dict[str, tuple[str, float]]:
    """Per question type: the most common answer (ties broken alphabetically) and its share."""
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for example in examples:
        counts[example.qtype][example.answer] += 1
    baseline = {}
    for qtype, answers in counts.items():
        answer, hits = min(answers.items(), key=lambda item: (-item[1], item[0]))
        baseline[qtype] = (answer, hits / answers.total())
    return baseline


def majority_accuracy(
    train_examples: Iterable[VQAExample | QuestionAnswer],
    test_examples: Iterable[VQAExample | QuestionAnswer],
) -> dict[str, float]:
    """Accuracy on test of answering each type with its train-majority answer; per type and "overall"."""
    guess = {qtype: answer for qtype, (answer, _) in majority_baseline(train_examples).items()}
    hits: Counter[str] = Counter()
    totals: Counter[str] = Counter()
    for example in test_examples:
        totals[example.qtype] += 1
        hits[example.qtype] += guess.get(example.qtype) == example.answer
    accuracy = {qtype: hits[qtype] / totals[qtype] for qtype in QUESTION_TYPES if totals[qtype]}
    accuracy["overall"] = hits.total() / totals.total() if totals else 0.0
    return accuracy
