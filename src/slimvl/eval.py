"""Exact-match accuracy on the synthetic VQA task, with confidence intervals and baselines.

Every recipe is evaluated on the same questions (the first N seeds of a split), so two recipes can be
compared question by question (`paired_difference`).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from slimvl.api import SlimModel
from slimvl.data import (
    QUESTION_TYPES,
    VQAExample,
    blank_image,
    examples,
    majority_accuracy,
    question_answers,
)

Z95 = 1.959963984540054
MAJORITY_TRAIN_N = 5000  # train examples the majority-answer baseline is fitted on


def normalize_answer(text: str) -> str:
    return text.strip().strip(".!?,").strip().lower()


def wilson_interval(hits: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion (sensible near 0 and 1, unlike the normal one)."""
    if n == 0:
        return (0.0, 1.0)
    p = hits / n
    denom = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, center - half), min(1.0, center + half))


@dataclass
class EvalResult:
    split: str
    n: int
    blind: bool
    correct: list[bool]  # per question, in seed order
    qtypes: list[str]
    majority: dict[str, float] = field(default_factory=dict)
    # (n, vocab) log-probabilities of the first answer token, per question; kept only when asked for
    first_logprobs: torch.Tensor | None = field(default=None, repr=False)

    @property
    def accuracy(self) -> float:
        return sum(self.correct) / self.n if self.n else 0.0

    @property
    def ci95(self) -> tuple[float, float]:
        return wilson_interval(sum(self.correct), self.n)

    def by_type(self) -> dict[str, dict[str, float]]:
        hits: Counter[str] = Counter()
        totals: Counter[str] = Counter()
        for ok, qtype in zip(self.correct, self.qtypes, strict=True):
            totals[qtype] += 1
            hits[qtype] += ok
        out = {}
        for qtype in QUESTION_TYPES:
            if totals[qtype]:
                low, high = wilson_interval(hits[qtype], totals[qtype])
                out[qtype] = {
                    "accuracy": hits[qtype] / totals[qtype],
                    "n": totals[qtype],
                    "ci95": [low, high],
                    "majority_baseline": self.majority.get(qtype),
                }
        return out

    def to_dict(self) -> dict:
        return {
            "split": self.split,
            "n": self.n,
            "blind": self.blind,
            "accuracy": self.accuracy,
            "ci95": list(self.ci95),
            "by_type": self.by_type(),
            "majority_baseline": self.majority.get("overall"),
        }


def evaluate(
    model: SlimModel,
    split: str = "test",
    n: int = 1000,
    blind: bool = False,
    max_new_tokens: int = 4,
    keep_logprobs: bool = False,
    questions: Sequence[VQAExample] | None = None,
) -> EvalResult:
    """Greedy answers to the first `n` questions of `split` (or to `questions`, already made from them);
    `blind` replaces each image by a blank one."""
    questions = list(examples(split, n)) if questions is None else list(questions)
    correct, logprobs = [], []
    for example in questions:
        image = blank_image(example.image.size) if blind else example.image
        answer = model.generate([image], example.question, max_new_tokens=max_new_tokens)
        correct.append(normalize_answer(answer.text) == example.answer)
        if keep_logprobs:
            logprobs.append(torch.log_softmax(answer.first_logits, dim=-1))
    majority = majority_accuracy(question_answers("train", MAJORITY_TRAIN_N), questions)
    stacked = torch.stack(logprobs) if keep_logprobs and logprobs else None
    return EvalResult(
        split, len(questions), blind, correct, [ex.qtype for ex in questions], majority, stacked
    )


def next_token_agreement(reference: EvalResult, candidate: EvalResult) -> dict[str, float]:
    """Top-1 agreement of the first answer token and mean KL(reference || candidate) in nats."""
    if reference.first_logprobs is None or candidate.first_logprobs is None:
        raise ValueError("next_token_agreement needs both evaluations run with keep_logprobs=True")
    if reference.qtypes != candidate.qtypes:
        raise ValueError("next_token_agreement needs the same questions in both evaluations")
    p, q = reference.first_logprobs, candidate.first_logprobs
    agree = (p.argmax(-1) == q.argmax(-1)).float().mean()
    kl = (p.exp() * (p - q)).sum(-1)
    return {"top1_agreement": float(agree), "mean_kl": float(kl.mean()), "max_kl": float(kl.max())}


def paired_difference(a: EvalResult, b: EvalResult) -> dict[str, float]:
    """Accuracy of b minus a on the same questions, with a 95% interval from the paired differences."""
    if a.n != b.n or a.qtypes != b.qtypes:
        raise ValueError("paired comparison needs the same questions in both evaluations")
    diffs = [int(y) - int(x) for x, y in zip(a.correct, b.correct, strict=True)]
    mean = sum(diffs) / len(diffs)
    var = sum((d - mean) ** 2 for d in diffs) / max(1, len(diffs) - 1)
    half = Z95 * math.sqrt(var / len(diffs))
    return {"delta": mean, "ci95": [mean - half, mean + half], "n": len(diffs)}
