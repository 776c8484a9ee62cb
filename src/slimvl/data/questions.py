"""Question types: each builder picks its answer first, then builds a scene that makes it true.

Picking the answer uniformly before the scene keeps every type's answer distribution flat, so guessing the
most common answer scores far below a model that looks at the image.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from slimvl.data.scene import (
    COLORS,
    DIRECTIONS,
    MAX_OBJECTS,
    MIN_OBJECTS,
    PAIRS,
    SHAPES,
    SceneObject,
    Slot,
    clear_half,
    layout,
    neighbor,
)

QUESTION_TYPES: tuple[str, ...] = ("color", "shape", "count", "exists", "position", "relation")
NUMBER_WORDS: tuple[str, ...] = ("zero", "one", "two", "three", "four", "five")
POSITIONS: tuple[str, ...] = ("left", "right", "top", "bottom")
ANSWER_VOCABULARY: tuple[str, ...] = (*COLORS, *SHAPES, *NUMBER_WORDS, "yes", "no", *POSITIONS)

PLURALS: dict[str, str] = {shape: shape + ("es" if shape.endswith("s") else "s") for shape in SHAPES}
_WHERE = {"left": "to the left of", "right": "to the right of", "above": "above", "below": "below"}

# Placeholders: {shape} {color} {obj} ("red circle"), {a} ("a"/"an" before {obj}), {kind} ("red objects" or
# "circles"), {where} ("to the left of", "above", ...).
TEMPLATES: dict[str, tuple[str, ...]] = {
    "color": (
        "What color is the {shape}?",
        "Which color is the {shape}?",
        "What is the color of the {shape}?",
        "The {shape} is what color?",
    ),
    "shape": (
        "Which shape is {color}?",
        "What shape is the {color} object?",
        "What is the shape of the {color} object?",
        "The {color} object is which shape?",
    ),
    "count": (
        "How many {kind} are there?",
        "How many {kind} are in the image?",
        "Count the {kind}.",
        "What is the number of {kind}?",
    ),
    "exists": (
        "Is there {a} {obj}?",
        "Is there {a} {obj} in the image?",
        "Does the image contain {a} {obj}?",
        "Can you see {a} {obj}?",
    ),
    "position_horizontal": (
        "Is the {obj} on the left or the right?",
        "In which half of the image is the {obj}: left or right?",
        "Is the {obj} in the left or the right half?",
        "On which side is the {obj}, left or right?",
    ),
    "position_vertical": (
        "Is the {obj} at the top or the bottom?",
        "In which half of the image is the {obj}: top or bottom?",
        "Is the {obj} in the top or the bottom half?",
        "Is the {obj} nearer the top or the bottom?",
    ),
    "relation": (
        "What shape is directly {where} the {obj}?",
        "Which shape is immediately {where} the {obj}?",
        "What is the shape of the object just {where} the {obj}?",
    ),
    "relation_nearest": (
        "What shape is next to the {obj}?",
        "Which shape is closest to the {obj}?",
        "What is the shape of the object nearest to the {obj}?",
    ),
}

Scene = tuple[list[SceneObject], str, str]  # objects, question, answer


def _article(label: str) -> str:
    return "an" if label[0] in "aeiou" else "a"


def _ask(rng: random.Random, template_key: str, **fields: str) -> str:
    return rng.choice(TEMPLATES[template_key]).format(**fields)


def _count(rng: random.Random, minimum: int = MIN_OBJECTS) -> int:
    return rng.randint(max(MIN_OBJECTS, minimum), MAX_OBJECTS)


def _pairs(
    rng: random.Random, k: int, keep: Callable[[str, str], bool], taken: list[tuple[str, str]]
) -> list[tuple[str, str]]:
    """k distinct (color, shape) pairs that satisfy keep and are not already taken."""
    return rng.sample([p for p in PAIRS if keep(*p) and p not in taken], k)


def _dress(slots: list[Slot], pairs: list[tuple[str, str]]) -> list[SceneObject]:
    return [
        SceneObject(**vars(slot), color=color, shape=shape)
        for slot, (color, shape) in zip(slots, pairs, strict=True)
    ]


def _shuffled_scene(
    rng: random.Random, pairs: list[tuple[str, str]], size: tuple[int, int]
) -> list[SceneObject]:
    """Objects for pairs at random places, in random order."""
    rng.shuffle(pairs)
    return _dress(layout(rng, len(pairs), size), pairs)


def _color_question(rng: random.Random, size: tuple[int, int]) -> Scene:
    color, shape = rng.choice(tuple(COLORS)), rng.choice(SHAPES)
    pairs = [(color, shape)]
    pairs += _pairs(rng, _count(rng) - 1, lambda c, s: s != shape, pairs)
    return _shuffled_scene(rng, pairs, size), _ask(rng, "color", shape=shape), color


def _shape_question(rng: random.Random, size: tuple[int, int]) -> Scene:
    color, shape = rng.choice(tuple(COLORS)), rng.choice(SHAPES)
    pairs = [(color, shape)]
    pairs += _pairs(rng, _count(rng) - 1, lambda c, s: c != color, pairs)
    return _shuffled_scene(rng, pairs, size), _ask(rng, "shape", color=color), shape


def _count_question(rng: random.Random, size: tuple[int, int]) -> Scene:
    k = rng.randrange(len(NUMBER_WORDS))
    n = _count(rng, minimum=k)
    if rng.random() < 0.5:
        color = rng.choice(tuple(COLORS))
        pairs = [(color, shape) for shape in rng.sample(SHAPES, k)]
        pairs += _pairs(rng, n - k, lambda c, s: c != color, pairs)
        kind = f"{color} objects"
    else:
        shape = rng.choice(SHAPES)
        pairs = [(color, shape) for color in rng.sample(tuple(COLORS), k)]
        pairs += _pairs(rng, n - k, lambda c, s: s != shape, pairs)
        kind = PLURALS[shape]
    return _shuffled_scene(rng, pairs, size), _ask(rng, "count", kind=kind), NUMBER_WORDS[k]


def _exists_question(rng: random.Random, size: tuple[int, int]) -> Scene:
    """Decoys sharing only the color or only the shape appear regardless of the answer, so binding matters."""
    color, shape = rng.choice(tuple(COLORS)), rng.choice(SHAPES)
    present = rng.random() < 0.5
    pairs = [(color, shape)] if present else []
    if rng.random() < 0.5:
        pairs.append((color, rng.choice([s for s in SHAPES if s != shape])))
    if rng.random() < 0.5:
        pairs.append((rng.choice([c for c in COLORS if c != color]), shape))
    pairs += _pairs(rng, _count(rng) - len(pairs), lambda c, s: (c, s) != (color, shape), pairs)
    obj = f"{color} {shape}"
    question = _ask(rng, "exists", obj=obj, a=_article(obj))
    return _shuffled_scene(rng, pairs, size), question, "yes" if present else "no"


def _position_question(rng: random.Random, size: tuple[int, int]) -> Scene:
    answer = rng.choice(POSITIONS)
    axis = "horizontal" if answer in ("left", "right") else "vertical"
    while True:
        slots = layout(rng, _count(rng), size)
        targets = [i for i, slot in enumerate(slots) if clear_half(slot.center, size, axis) == answer]
        if targets:
            break
    objects = _dress(slots, rng.sample(PAIRS, len(slots)))
    question = _ask(rng, f"position_{axis}", obj=objects[rng.choice(targets)].label)
    return objects, question, answer


def _relation_question(rng: random.Random, size: tuple[int, int]) -> Scene:
    direction, answer = rng.choice(DIRECTIONS), rng.choice(SHAPES)
    while True:
        slots = layout(rng, _count(rng), size)
        centers = [slot.center for slot in slots]
        anchors = rng.sample(range(len(slots)), len(slots))
        found = next(((a, t) for a in anchors if (t := neighbor(centers, a, direction)) is not None), None)
        if found is not None:
            anchor, target = found
            break
    target_pair = (rng.choice(tuple(COLORS)), answer)
    others = iter(_pairs(rng, len(slots) - 1, lambda c, s: True, [target_pair]))
    objects = _dress(slots, [target_pair if i == target else next(others) for i in range(len(slots))])
    obj = objects[anchor].label
    if direction == "nearest":
        question = _ask(rng, "relation_nearest", obj=obj)
    else:
        question = _ask(rng, "relation", obj=obj, where=_WHERE[direction])
    return objects, question, answer


BUILDERS: dict[str, Callable[[random.Random, tuple[int, int]], Scene]] = {
    "color": _color_question,
    "shape": _shape_question,
    "count": _count_question,
    "exists": _exists_question,
    "position": _position_question,
    "relation": _relation_question,
}


def corpus_texts() -> list[str]:
    """Every phrasing filled with every possible value, plus the answers: all words a model will meet."""
    labels = [f"{color} {shape}" for color, shape in PAIRS]
    kinds = [f"{color} objects" for color in COLORS] + list(PLURALS.values())
    fills: dict[str, list[dict[str, str]]] = {
        "color": [{"shape": shape} for shape in SHAPES],
        "shape": [{"color": color} for color in COLORS],
        "count": [{"kind": kind} for kind in kinds],
        "exists": [{"obj": obj, "a": _article(obj)} for obj in labels],
        "position_horizontal": [{"obj": obj} for obj in labels],
        "position_vertical": [{"obj": obj} for obj in labels],
        "relation": [{"obj": obj, "where": where} for obj in labels for where in _WHERE.values()],
        "relation_nearest": [{"obj": obj} for obj in labels],
    }
    texts = [
        template.format(**fill)
        for key, templates in TEMPLATES.items()
        for template in templates
        for fill in fills[key]
    ]
    texts.append(" ".join(ANSWER_VOCABULARY))
    return texts
