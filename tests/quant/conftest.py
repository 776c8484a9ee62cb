"""Helpers to run the small checkpoint teacher-forced and to run calibration requests on it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace

import pytest
import torch
from PIL import Image
from torch import nn

from slimvl.calibration import CalibrationRunner
from slimvl.models.hooks import RunCalibration
from slimvl.models.loader import LoadedModel

FeedFactory = Callable[[nn.Module], RunCalibration]


@pytest.fixture(scope="module")
def calibration_feed(small_model: LoadedModel, tall_image: Image.Image) -> FeedFactory:
    """Calibration runs of two requests (another image, other questions than ``logits_of``) on a given
    model (a copy of the small one)."""
    requests = [([tall_image], q) for q in ("Which shape is red?", "How many?")]
    return lambda model: CalibrationRunner(replace(small_model, model=model), requests).run


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """One intra-op thread: small ops on a shared 2-core machine otherwise wait on each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
