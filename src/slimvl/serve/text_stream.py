"""The answer's text as tokens arrive: what may be sent so far, and where a stop sequence ends it.

The text is the tokens decoded together (a character may span tokens), stripped at both ends as
`slimvl run` prints it. A piece is sent only once no later token can change it: trailing whitespace
(it is stripped if the answer ends there), an incomplete character (decoded as U+FFFD), and a tail that
could be the start of a stop sequence wait for the next token. So the streamed pieces, joined, are the
non-streamed answer.
"""

from __future__ import annotations

from collections.abc import Callable


class AnswerText:
    def __init__(self, decode: Callable[[list[int]], str], eos_ids: set[int], stops: list[str]) -> None:
        self.decode, self.eos_ids, self.stops = decode, eos_ids, stops
        self.tokens: list[int] = []
        self.sent = 0  # characters of the text already handed out
        self.stopped = False  # a stop sequence was found
        self._text = ""

    def add(self, token: int) -> bool:
        """Take one generated token; False once a stop sequence has been generated."""
        if token not in self.eos_ids:
            self.tokens.append(token)
            self._text = self.decode(self.tokens).lstrip()
            cut = self._first_stop()
            if cut is not None:
                self._text, self.stopped = self._text[:cut], True
        return not self.stopped

    def delta(self) -> str:
        """The text no later token can change, not yet handed out."""
        safe = len(self._text.rstrip())
        while safe and self._text[safe - 1] == "\ufffd":
            safe -= 1
        if not self.stopped and self.stops:
            safe = min(safe, len(self._text) - max(len(s) for s in self.stops) + 1)
        return self._take(safe)

    def finish(self) -> str:
        """The rest of the answer's text, once generation has ended."""
        self._text = self._text.rstrip()
        return self._take(len(self._text))

    @property
    def text(self) -> str:
        return self._text

    def _take(self, upto: int) -> str:
        if upto <= self.sent:
            return ""
        piece = self._text[self.sent : upto]
        self.sent = upto
        return piece

    def _first_stop(self) -> int | None:
        found = [i for i in (self._text.find(s) for s in self.stops) if i >= 0]
        return min(found) if found else None
