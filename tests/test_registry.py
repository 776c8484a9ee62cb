"""How the registry combines the request hooks of a recipe's sections: the last section that acts on its
own, inside the sections that wrap (a run-time controller) — whatever their order in the recipe."""

from __future__ import annotations

from slimvl.models.hooks import RequestHooks, RequestMode, WrappingHooks
from slimvl.registry import _combined


class Own(RequestHooks):
    pass


class Wrapper(WrappingHooks):
    def begin_request(self, images, prompt, max_new_tokens):
        return RequestMode(threads=1, record={"name": "wrapped"})


def test_a_wrapping_section_wraps_the_hooks_of_the_sections_after_it() -> None:
    wrapper, inner = Wrapper(), Own()
    combined = _combined([wrapper, None, inner])
    assert combined is wrapper and wrapper.inner is inner
    assert combined.begin_request([], "q", 1).threads == 1
    seq = object()
    assert combined.after_vision(seq) is seq  # delegated to the inner (plain) hooks


def test_without_a_wrapper_the_last_own_hooks_win_and_none_stays_none() -> None:
    first, last = Own(), Own()
    assert _combined([first, None, last]) is last
    assert _combined([None, None]) is None
    alone = Wrapper()
    assert _combined([alone]) is alone and type(alone.inner) is RequestHooks
