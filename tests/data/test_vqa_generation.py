import re

import numpy as np
import pytest

from slimvl.data import (
    ANSWER_VOCABULARY,
    COLORS,
    QUESTION_TYPES,
    SHAPES,
    SIZES,
    blank_image,
    corpus_texts,
    make_example,
)


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


def test_same_seed_gives_identical_example():
    for seed in (0, 1, 12345, 2_000_017):
        a, b = make_example(seed), make_example(seed)
        assert a.image.tobytes() == b.image.tobytes()
        assert (a.question, a.answer, a.qtype, a.objects) == (b.question, b.answer, b.qtype, b.objects)


def test_different_seeds_differ():
    examples = [make_example(seed) for seed in range(20)]
    assert len({ex.image.tobytes() for ex in examples}) == 20
    assert len({(ex.question, ex.answer) for ex in examples}) > 10


def test_example_fields():
    ex = make_example(3)
    assert ex.image.mode == "RGB" and ex.image.size == (448, 448)
    assert ex.seed == 3 and ex.qtype in QUESTION_TYPES
    assert ex.answer in ANSWER_VOCABULARY and ex.answer == ex.answer.lower() and " " not in ex.answer


@pytest.mark.parametrize("size", [(448, 448), (640, 320), (320, 480), (224, 224)])
def test_scenes_are_valid_at_any_size(size):
    width, height = size
    for seed in range(60):
        ex = make_example(seed, size)
        assert ex.image.size == size
        assert 3 <= len(ex.objects) <= 6
        assert len({(o.color, o.shape) for o in ex.objects}) == len(ex.objects)
        for o in ex.objects:
            assert o.color in COLORS and o.shape in SHAPES and o.size in SIZES
            x0, y0, x1, y1 = o.bbox
            assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
            assert (x1 - x0) * (y1 - y0) < 0.05 * width * height
        for i, a in enumerate(ex.objects):
            for b in ex.objects[i + 1 :]:
                ax0, ay0, ax1, ay1 = a.bbox
                bx0, by0, bx1, by1 = b.bbox
                assert ax1 < bx0 or bx1 < ax0 or ay1 < by0 or by1 < ay0, (seed, a, b)


def test_objects_are_drawn_in_their_color():
    ex = make_example(11)
    pixels = np.asarray(ex.image)
    for o in ex.objects:
        cx, cy = (int(v) for v in o.center)
        assert tuple(pixels[cy, cx]) == COLORS[o.color]


def test_sizes_and_shapes_vocabulary():
    assert len(SHAPES) >= 5 and len(COLORS) >= 6 and len(SIZES) >= 2


def test_bad_size_is_rejected():
    with pytest.raises(ValueError, match="size"):
        make_example(0, (10, 10))


def test_blank_image_is_plain():
    image = blank_image((320, 200))
    assert image.mode == "RGB" and image.size == (320, 200)
    assert len(image.getcolors()) == 1


def test_corpus_covers_every_question_and_answer_word():
    vocabulary = set().union(*(_words(text) for text in corpus_texts()))
    assert set(ANSWER_VOCABULARY) <= vocabulary
    for seed in range(500):
        ex = make_example(seed, (128, 128))
        assert _words(ex.question) <= vocabulary, ex.question
