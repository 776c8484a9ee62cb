"""Shared fixtures: one small random checkpoint on disk per session, test images, and the logits of a
request at every position (teacher-forced)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from slimvl import registry
from slimvl.models.checkpoint import write_random_checkpoint
from slimvl.models.loader import LoadedModel, load_model
from slimvl.models.preprocess import ModelInputs
from slimvl.models.steps import build_sequence, encode_images

# Kernel races run afresh in tests (and in the bench workers they start): no choices stored on the
# machine are read or written (tests/quant/test_quant_choices.py turns the store on where it is tested).
os.environ["SLIMVL_CACHE_DIR"] = ""


@pytest.fixture(scope="session")
def small_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small random Qwen3-VL checkpoint directory, written once per session."""
    return write_random_checkpoint(tmp_path_factory.mktemp("checkpoint") / "random")


@pytest.fixture(scope="session")
def small_model(small_checkpoint: Path) -> LoadedModel:
    """The small checkpoint loaded once (fp32); tests must not modify it."""
    return load_model(str(small_checkpoint))


@pytest.fixture(scope="session")
def square_image() -> Image.Image:
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (448, 448, 3), dtype=np.uint8))


@pytest.fixture(scope="session")
def tall_image() -> Image.Image:
    """Non-square: 320 wide, 512 high."""
    return Image.fromarray(np.random.default_rng(1).integers(0, 256, (512, 320, 3), dtype=np.uint8))


@pytest.fixture
def image_file(tmp_path: Path, square_image: Image.Image) -> Path:
    path = tmp_path / "square.png"
    square_image.save(path)
    return path


@pytest.fixture
def not_built(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """`not_built("int8", ...)`: those recipe sections have no handler for the rest of the test."""
    real = registry.handler

    def hide(*keys: str) -> None:
        monkeypatch.setattr(
            registry, "handler", lambda section: None if section.key in keys else real(section)
        )

    return hide


LogitsFn = Callable[[nn.Module], torch.Tensor]


def _forward(model: nn.Module, inputs: ModelInputs) -> torch.Tensor:
    """Logits at every position of one request (vision, DeepStack, decoder, lm_head)."""
    with torch.inference_mode():
        seq = build_sequence(model, inputs, encode_images(model, inputs))
        out = model.model.language_model(
            inputs_embeds=seq.inputs_embeds,
            position_ids=seq.position_ids,
            visual_pos_masks=seq.visual_mask,
            deepstack_visual_embeds=seq.deepstack,
        )
        return model.lm_head(out.last_hidden_state)[0]


@pytest.fixture(scope="session")
def forward_logits() -> Callable[[nn.Module, ModelInputs], torch.Tensor]:
    """Logits at every position of one request's inputs through a model (any checkpoint's)."""
    return _forward


@pytest.fixture(scope="module")
def logits_of(small_model: LoadedModel, square_image: Image.Image) -> LogitsFn:
    inputs = small_model.preprocessor([square_image], "What is on the table?")
    return lambda model: _forward(model, inputs)
