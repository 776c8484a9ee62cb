"""Recompute each answer from the scene's objects, independently of the generator's code."""

import math
import re

from slimvl.data import COLORS, QUESTION_TYPES, SHAPES, SceneObject, make_example

NUMBERS = ["zero", "one", "two", "three", "four", "five", "six"]
COLOR = "|".join(COLORS)
SHAPE = "|".join(SHAPES)


def _find(pattern: str, question: str) -> re.Match:
    matches = list(re.finditer(pattern, question))
    assert len(matches) == 1, (pattern, question)
    return matches[0]


def _only(objects: list[SceneObject], **attrs: str) -> SceneObject:
    found = [o for o in objects if all(getattr(o, k) == v for k, v in attrs.items())]
    assert len(found) == 1, (attrs, objects)
    return found[0]


def _relation(objects: list[SceneObject], anchor: SceneObject, direction: str) -> str:
    ax, ay = anchor.center
    candidates = []
    for o in objects:
        if o is anchor:
            continue
        dx, dy = o.center[0] - ax, o.center[1] - ay
        inside = {
            "left": -dx > abs(dy),
            "right": dx > abs(dy),
            "above": -dy > abs(dx),
            "below": dy > abs(dx),
            "nearest": True,
        }[direction]
        if inside:
            candidates.append((math.hypot(dx, dy), o.shape))
    candidates.sort()
    assert candidates
    if len(candidates) > 1:
        assert candidates[0][0] <= 0.9 * candidates[1][0]
    return candidates[0][1]


def expected_answer(qtype: str, question: str, objects: list[SceneObject], size: tuple[int, int]) -> str:
    q = question.lower()
    if qtype == "color":
        return _only(objects, shape=_find(rf"\b({SHAPE})\b", q)[1]).color
    if qtype == "shape":
        return _only(objects, color=_find(rf"\b({COLOR})\b", q)[1]).shape
    if qtype == "count":
        by_color = re.search(rf"\b({COLOR}) objects\b", q)
        if by_color:
            return NUMBERS[sum(o.color == by_color[1] for o in objects)]
        shape = _find(rf"\b({SHAPE})e?s\b", q)[1]
        return NUMBERS[sum(o.shape == shape for o in objects)]
    label = _find(rf"\b({COLOR}) ({SHAPE})\b", q)
    if qtype == "exists":
        return "yes" if any((o.color, o.shape) == (label[1], label[2]) for o in objects) else "no"
    target = _only(objects, color=label[1], shape=label[2])
    if qtype == "position":
        horizontal = "left" in q
        assert horizontal != ("top" in q)
        position = target.center[0] / size[0] if horizontal else target.center[1] / size[1]
        assert abs(position - 0.5) > 0.15, "position question about an object near the middle"
        return (
            ("right" if position > 0.5 else "left") if horizontal else ("bottom" if position > 0.5 else "top")
        )
    assert qtype == "relation"
    direction = next((d for d in ("left", "right", "above", "below") if re.search(rf"\b{d}\b", q)), "nearest")
    return _relation(objects, target, direction)


def test_answers_match_the_objects():
    seen = set()
    for seed in range(300):
        size = [(448, 448), (640, 320), (320, 480)][seed % 3]
        ex = make_example(seed, size)
        assert ex.answer == expected_answer(ex.qtype, ex.question, ex.objects, size), (seed, ex.question)
        seen.add(ex.qtype)
    assert seen == set(QUESTION_TYPES)
