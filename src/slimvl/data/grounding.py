"""Which objects of a scene a question is about: the ground truth a model has to look at to answer.

Used to supervise training (where the tiny model should attend) and to check sparsifiers (whether the
tokens they keep cover the objects the answer depends on).
"""

from __future__ import annotations

import re

from slimvl.data.dataset import VQAExample
from slimvl.data.questions import PLURALS
from slimvl.data.scene import COLORS, SHAPES, neighbor

_DIRECTION_WORDS = {"left of": "left", "right of": "right", "above": "above", "below": "below"}
_PLURAL_SHAPES = {plural: shape for shape, plural in PLURALS.items()}


def _words(question: str) -> list[str]:
    return re.findall(r"[a-z]+", question.lower())


def _labelled(example: VQAExample) -> list[int]:
    """Objects whose "color shape" label the question names (one at most: labels are unique)."""
    text = " ".join(_words(example.question))
    return [i for i, obj in enumerate(example.objects) if re.search(rf"\b{obj.label}\b", text)]


def referenced_objects(example: VQAExample) -> list[int]:
    """Indices into example.objects of the objects the answer depends on (may be empty: "no"/"zero")."""
    words = _words(example.question)
    objects = example.objects
    if example.qtype == "color":
        shape = next(w for w in words if w in SHAPES)
        return [i for i, obj in enumerate(objects) if obj.shape == shape]
    if example.qtype == "shape":
        color = next(w for w in words if w in COLORS)
        return [i for i, obj in enumerate(objects) if obj.color == color]
    if example.qtype == "count":
        if "objects" in words:
            color = next(w for w in words if w in COLORS)
            return [i for i, obj in enumerate(objects) if obj.color == color]
        shape = next(_PLURAL_SHAPES[w] for w in words if w in _PLURAL_SHAPES)
        return [i for i, obj in enumerate(objects) if obj.shape == shape]
    if example.qtype in ("exists", "position"):
        return _labelled(example)
    if example.qtype == "relation":
        (anchor,) = _labelled(example)
        text = " ".join(words)
        direction = next((d for phrase, d in _DIRECTION_WORDS.items() if phrase in text), "nearest")
        target = neighbor([obj.center for obj in objects], anchor, direction)
        return [anchor, target]
    raise ValueError(f"qtype: got {example.qtype!r}")


def referring_word(example: VQAExample) -> str:
    """The question's word that says what to look for: in "What color is the circle?" "circle", in
    "Is there a red star?" "star" (the last word of the object's name), in "How many blue objects are
    there?" "blue"."""
    words = _words(example.question)
    if example.qtype == "color":
        return next(w for w in words if w in SHAPES)
    if example.qtype == "shape":
        return next(w for w in words if w in COLORS)
    if example.qtype == "count":
        return next(w for w in words if w in COLORS or w in _PLURAL_SHAPES)
    return next(
        shape for color, shape in zip(words, words[1:], strict=False) if color in COLORS and shape in SHAPES
    )
