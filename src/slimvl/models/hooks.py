"""The points where an optimization acts on one request, each with the plain stage as its default.

The pipeline calls every hook of one `RequestHooks` object on every request; an optimization that acts
at run time returns a subclass that overrides the points it needs (the visual token sparsifiers do).
`stage(name)` is the request's stage timer: a hook times the part of its work that belongs to another
stage under that stage's name (a scorer inside the vision encoder times its scoring as "sparsify"),
and nested stages count only in their own total.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn
from transformers import DynamicCache, Qwen3VLForConditionalGeneration

from slimvl.models.decode import LeanDecoder, StaticKVCache
from slimvl.models.preprocess import ModelInputs
from slimvl.models.steps import DecoderSequence, VisualFeatures, encode_images, prefill

Stage = Callable[[str], AbstractContextManager[None]]

# Called with a module's positional and keyword inputs just before it runs (a forward pre-hook).
InputObserver = Callable[[nn.Module, tuple[Any, ...], dict[str, Any]], None]


class StopRequest(Exception):
    """Raised by an observer that has seen what it needs of a calibration request: the rest of that
    request is skipped and the next one runs."""


class RunCalibration(Protocol):
    """Runs every calibration request through the pipeline's stages with `hooks` (plain by default),
    calling `observers[module]` before each run of `module`; returns the number of requests run.
    (`slimvl.calibration.CalibrationRunner.run` is the one implementation.)"""

    def __call__(
        self, observers: Mapping[nn.Module, InputObserver] = ..., hooks: RequestHooks | None = None
    ) -> int: ...


# (n, max_new_tokens=2) -> a calibration run over the first n calibration requests, each answered with
# up to max_new_tokens greedy tokens (what a recipe section's `apply` gets)
CalibrationRuns = Callable[..., RunCalibration]


@dataclass
class Applied:
    """What applying one recipe section to a model returns (see `slimvl.registry`)."""

    hooks: RequestHooks | None = None  # its run-time part, if it acts on requests
    plan: dict | None = None  # JSON-ready record of what it changed in the weights, saved with them


@dataclass(frozen=True)
class RequestMode:
    """How one request runs, decided before it starts (`RequestHooks.begin_request`): ``threads`` (None:
    as configured), ``max_pixels`` per image (None: the image processor's), and what the metrics show
    of the decision (``record``, JSON-ready; empty: nothing was decided)."""

    threads: int | None = None
    max_pixels: int | None = None
    record: Mapping[str, Any] | None = None


class RequestHooks:
    """Plain Qwen3-VL: every visual token reaches the decoder."""

    def begin_request(self, images: list, prompt: str, max_new_tokens: int) -> RequestMode:
        """The request's mode (by default: as configured)."""
        return RequestMode()

    def encode_images(
        self, model: Qwen3VLForConditionalGeneration, inputs: ModelInputs, stage: Stage
    ) -> VisualFeatures | None:
        """The vision encoder's output (None for a prompt without images)."""
        return encode_images(model, inputs)

    def after_vision(self, seq: DecoderSequence) -> DecoderSequence:
        """The sequence the prefill runs on, from the full one (timed as the "sparsify" stage)."""
        return seq

    def prefill(
        self,
        model: Qwen3VLForConditionalGeneration,
        seq: DecoderSequence,
        cache: DynamicCache,
        stage: Stage,
    ) -> tuple[torch.Tensor, DynamicCache, DecoderSequence]:
        """The last position's logits, the filled cache and the sequence the cache holds."""
        logits, cache = prefill(model, seq, cache)
        return logits, cache, seq

    def decode_step(
        self, decoder: LeanDecoder, token: torch.Tensor, position: int, cache: StaticKVCache
    ) -> torch.Tensor:
        """The next token's logits."""
        return decoder.step(token, position, cache)


class WrappingHooks(RequestHooks):
    """Hooks that act around another section's hooks (``inner``, set by `slimvl.registry` once every
    section is applied): by default each point is ``inner``'s."""

    inner: RequestHooks = RequestHooks()

    def begin_request(self, images: list, prompt: str, max_new_tokens: int) -> RequestMode:
        return self.inner.begin_request(images, prompt, max_new_tokens)

    def encode_images(self, model, inputs, stage):
        return self.inner.encode_images(model, inputs, stage)

    def after_vision(self, seq: DecoderSequence) -> DecoderSequence:
        return self.inner.after_vision(seq)

    def prefill(self, model, seq, cache, stage):
        return self.inner.prefill(model, seq, cache, stage)

    def decode_step(self, decoder, token, position, cache):
        return self.inner.decode_step(decoder, token, position, cache)
