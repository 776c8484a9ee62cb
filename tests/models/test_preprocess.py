from __future__ import annotations

from pathlib import Path

import pytest
import torch
import transformers
from PIL import Image
from transformers import Qwen3VLProcessor

from slimvl.errors import InputError
from slimvl.models.loader import LoadedModel
from slimvl.models.preprocess import Preprocessor, load_image

QUESTION = "What color is the circle on the left?"


@pytest.fixture
def reference(monkeypatch: pytest.MonkeyPatch, small_model: LoadedModel) -> Qwen3VLProcessor:
    """transformers' own processor over the same tokenizer and image processor.

    Its constructor rejects `video_processor=None` without torchvision, so the class check is bypassed.
    """
    monkeypatch.setattr(
        transformers.processing_utils.ProcessorMixin,
        "check_argument_for_proper_class",
        lambda self, name, arg: None,
    )
    pre = small_model.preprocessor
    return Qwen3VLProcessor(
        image_processor=pre.image_processor,
        tokenizer=pre.tokenizer,
        video_processor=None,
        chat_template=pre.tokenizer.chat_template,
    )


@pytest.mark.parametrize("which", [["square"], ["tall"], ["tall", "square"]])
def test_matches_reference_processor(
    which: list[str],
    reference: Qwen3VLProcessor,
    small_model: LoadedModel,
    square_image: Image.Image,
    tall_image: Image.Image,
) -> None:
    images = [{"square": square_image, "tall": tall_image}[name] for name in which]
    pre = small_model.preprocessor
    text = reference.apply_chat_template(
        pre.messages(len(images), QUESTION), tokenize=False, add_generation_prompt=True
    )
    expected = reference(text=[text], images=images, return_tensors="pt")

    ours = pre(images, QUESTION)

    assert torch.equal(ours.input_ids, expected["input_ids"])
    assert torch.equal(ours.pixel_values, expected["pixel_values"])
    assert torch.equal(ours.image_grid_thw, expected["image_grid_thw"])
    assert torch.equal(ours.mm_token_type_ids, expected["mm_token_type_ids"])
    assert ours.visual_tokens == int(expected["mm_token_type_ids"].sum())


def test_text_only_prompt_has_no_visual_tokens(small_model: LoadedModel) -> None:
    inputs = small_model.preprocessor([], QUESTION)
    assert inputs.pixel_values is None and inputs.image_grid_thw is None
    assert inputs.visual_tokens == 0


@pytest.mark.parametrize("prompt", ["", "   \n"])
def test_empty_prompt_is_an_input_error(
    prompt: str, small_model: LoadedModel, square_image: Image.Image
) -> None:
    with pytest.raises(InputError, match="empty"):
        small_model.preprocessor([square_image], prompt)


def test_tokenizer_without_chat_template_is_rejected(small_model: LoadedModel) -> None:
    tokenizer = small_model.preprocessor.tokenizer.__class__.from_pretrained(small_model.path)
    tokenizer.chat_template = None
    with pytest.raises(InputError, match="chat template"):
        Preprocessor(tokenizer, small_model.preprocessor.image_processor)


def test_load_image_reads_a_png(image_file: Path, square_image: Image.Image) -> None:
    loaded = load_image(image_file)
    assert loaded.mode == "RGB" and loaded.size == square_image.size


def test_load_image_missing(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        load_image(tmp_path / "nope.png")


def test_load_image_directory(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        load_image(tmp_path)


def test_load_image_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "x.png"
    path.write_bytes(b"this is not an image" * 20)
    with pytest.raises(InputError, match="cannot read image"):
        load_image(path)


def test_load_image_truncated(tmp_path: Path, image_file: Path) -> None:
    data = image_file.read_bytes()
    path = tmp_path / "half.png"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="cannot read image"):
        load_image(path)
