"""The streamed answer text: pieces join to the final text, stop sequences cut across tokens, nothing
sent can change later."""

from __future__ import annotations

import pytest

from slimvl.serve.text_stream import AnswerText

# token id -> its text; 9 is end of answer; 5 and 6 are the two halves of one character
PIECES = {1: " Hello", 2: " wor", 3: "ld", 4: "  ", 5: "\xc3", 6: "\xa9", 7: "!", 8: " end"}
EOS = 9


def decode(tokens: list[int]) -> str:
    raw = "".join(PIECES[t] for t in tokens).encode("latin-1")
    return raw.decode("utf-8", errors="replace")


def _feed(tokens: list[int], stops: list[str]) -> tuple[list[str], AnswerText]:
    text = AnswerText(decode, {EOS}, stops)
    pieces = []
    for token in tokens:
        going = text.add(token)
        pieces.append(text.delta())
        if not going:
            break
    pieces.append(text.finish())
    return pieces, text


@pytest.mark.parametrize(
    ("tokens", "stops", "expected", "stopped"),
    [
        ([1, 2, 3, 4, 7, EOS], [], "Hello world  !", False),
        ([1, 4, 4, EOS], [], "Hello", False),
        ([1, 2, 3, 7, 8], ["ld!"], "Hello wor", True),
        ([1, 2, 3, 7, 8], ["o w"], "Hell", True),
        ([1, 5, 6, 7], [], "Hello\xe9!", False),
        ([1, 2, 3], ["zzz"], "Hello world", False),
    ],
)
def test_pieces_join_to_the_answer(tokens, stops, expected, stopped) -> None:
    pieces, text = _feed(tokens, stops)
    assert "".join(pieces) == text.text == expected
    assert text.stopped is stopped
    assert "\ufffd" not in "".join(pieces)


def test_nothing_is_sent_that_a_stop_sequence_could_still_claim() -> None:
    text = AnswerText(decode, {EOS}, ["world"])
    text.add(1)
    assert text.delta() == "H"  # "Hello": a "world" not yet complete starts in the last 4 characters
    text.add(2)
    assert text.delta() == "ello"  # "Hello wor": " wor" waits
    assert not text.add(3)  # "world" completes
    assert text.delta() == "" and text.finish() == "" and text.text == "Hello"
