"""Synthetic visual question answering: seeded scenes of colored shapes with one-word answers.

The task lets slimvl train its own tiny Qwen3-VL and measure the accuracy cost of every optimization.
"""

from slimvl.data.dataset import (
    SPLITS,
    VQAExample,
    examples,
    majority_accuracy,
    majority_baseline,
    make_example,
    question_answers,
    question_type,
)
from slimvl.data.questions import ANSWER_VOCABULARY, QUESTION_TYPES, corpus_texts
from slimvl.data.render import blank_image
from slimvl.data.scene import COLORS, SHAPES, SIZES, SceneObject

__all__ = [
    "ANSWER_VOCABULARY",
    "COLORS",
    "QUESTION_TYPES",
    "SHAPES",
    "SIZES",
    "SPLITS",
    "SceneObject",
    "VQAExample",
    "blank_image",
    "corpus_texts",
    "examples",
    "majority_accuracy",
    "majority_baseline",
    "make_example",
    "question_answers",
    "question_type",
]
