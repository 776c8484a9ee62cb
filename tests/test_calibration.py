from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from slimvl.calibration import Calibration, CalibrationRunner
from slimvl.errors import InputError
from slimvl.models.hooks import RequestHooks, StopRequest
from slimvl.models.loader import LoadedModel
from slimvl.models.steps import DecoderSequence


class CountSequences(RequestHooks):
    def __init__(self) -> None:
        self.lengths: list[int] = []

    def after_vision(self, seq: DecoderSequence) -> DecoderSequence:
        self.lengths.append(seq.length)
        return seq


def test_observers_see_every_request_through_the_pipelines_stages(
    small_model: LoadedModel, square_image: Image.Image, tall_image: Image.Image
) -> None:
    requests = [([square_image], "What color?"), ([tall_image], "How many?"), ([], "No image.")]
    runner = CalibrationRunner(small_model, requests)
    text = small_model.model.model.language_model
    seen: dict[str, list[int]] = {"merger": [], "head": []}
    observers = {
        small_model.model.model.visual.merger: lambda _m, args, _kw: seen["merger"].append(args[0].shape[0]),
        small_model.model.lm_head: lambda _m, args, _kw: seen["head"].append(args[0].shape[1]),
    }
    hooks = CountSequences()
    assert runner.run(observers, hooks) == 3
    # two images through the vision encoder (784 and 640 patches); the head sees each prefill's last
    # position, then one decode step each (max_new_tokens=2)
    assert seen["merger"] == [784, 640]
    assert seen["head"] == [1] * 6
    assert len(hooks.lengths) == 3
    assert not small_model.model.lm_head._forward_pre_hooks and not text.layers[0]._forward_pre_hooks


def test_an_observer_can_stop_a_request_early(small_model: LoadedModel, square_image: Image.Image) -> None:
    runner = CalibrationRunner(small_model, [([square_image], "What color?")] * 2)
    text = small_model.model.model.language_model
    reached: list[str] = []

    def stop(_module, _args, _kwargs) -> None:
        reached.append("layer 0")
        raise StopRequest

    observers = {
        text.layers[0]: stop,
        text.layers[1]: lambda *_: reached.append("layer 1"),
    }
    assert runner.run(observers) == 2
    assert reached == ["layer 0", "layer 0"]


def test_requests_come_from_a_directory_of_images(tmp_path: Path, square_image: Image.Image) -> None:
    for name in ("b.png", "a.jpg"):
        square_image.save(tmp_path / name)
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "prompts.txt").write_text("First?\n\nSecond?\n")
    requests = Calibration(tmp_path, samples=5).requests()
    assert [prompt for _, prompt in requests] == ["First?", "Second?"]
    assert all(len(images) == 1 for images, _ in requests)
    assert len(Calibration(tmp_path, samples=1).requests()) == 1
    with pytest.raises(InputError, match="holds no images"):
        Calibration(tmp_path / "empty" if (tmp_path / "empty").mkdir() is None else tmp_path).requests()
