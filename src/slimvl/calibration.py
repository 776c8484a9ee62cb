"""Calibration requests and the one runner that feeds them through the pipeline.

Every optimization that learns from data (int8 static ranges and SmoothQuant, the fitted token scorers;
pruning statistics and precision sensitivity next) runs its requests here: each request goes through
the same stages as a user's (`Pipeline`), with the caller's request hooks, while observers see the
inputs of the modules they watch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from slimvl.data import examples
from slimvl.errors import InputError
from slimvl.models.hooks import InputObserver, RequestHooks, StopRequest
from slimvl.models.loader import LoadedModel
from slimvl.models.preprocess import load_image
from slimvl.pipeline import Pipeline

CALIBRATION_PROMPT = "Describe the image."
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


@dataclass
class Calibration:
    """Where calibration requests come from: a directory of the user's images (and optional prompts.txt,
    one prompt per line), or the synthetic VQA training split."""

    directory: Path | None = None
    samples: int = 32

    def requests(self) -> list[tuple[list, str]]:
        if self.directory is None:
            return [([ex.image], ex.question) for ex in examples("train", self.samples)]
        files = sorted(p for p in self.directory.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise InputError(
                f"calibration directory {self.directory} holds no images ({', '.join(IMAGE_SUFFIXES)})"
            )
        prompts_file = self.directory / "prompts.txt"
        prompts = (
            [line.strip() for line in prompts_file.read_text().splitlines() if line.strip()]
            if prompts_file.is_file()
            else []
        )
        prompts = prompts or [CALIBRATION_PROMPT]
        return [([load_image(f)], prompts[i % len(prompts)]) for i, f in enumerate(files[: self.samples])]

    def runner(
        self, loaded: LoadedModel, samples: int | None = None, max_new_tokens: int = 2
    ) -> CalibrationRunner:
        """A runner over this source's first `samples` requests (by default `self.samples`)."""
        source = self if samples is None else Calibration(self.directory, samples)
        return CalibrationRunner(loaded, source.requests(), max_new_tokens)


@dataclass
class CalibrationRunner:
    """Runs calibration requests through a model's pipeline; `max_new_tokens` tokens each (the first
    comes from the prefill, the second from one decode step)."""

    loaded: LoadedModel
    requests: list[tuple[list, str]]
    max_new_tokens: int = 2

    def run(
        self, observers: Mapping[nn.Module, InputObserver] = {}, hooks: RequestHooks | None = None
    ) -> int:
        """See `slimvl.models.hooks.RunCalibration`."""
        pipeline = Pipeline(self.loaded, hooks)
        handles = [
            module.register_forward_pre_hook(observer, with_kwargs=True)
            for module, observer in observers.items()
        ]
        try:
            for images, prompt in self.requests:
                try:
                    pipeline(images, prompt, max_new_tokens=self.max_new_tokens)
                except StopRequest:
                    pass
        finally:
            for handle in handles:
                handle.remove()
        return len(self.requests)
