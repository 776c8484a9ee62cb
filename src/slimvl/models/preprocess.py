"""Turn images and a question into Qwen3-VL model inputs.

In transformers 5.x `Qwen3VLProcessor.from_pretrained` needs torchvision (its video processor
mapping), which cannot be installed beside torch 2.13 here. So the processor is composed from the
checkpoint's own tokenizer, chat template and PIL image processor, doing what the reference processor
does: render the chat, expand each `<|image_pad|>` to one token per merged patch, tokenize, and mark
the image tokens in `mm_token_type_ids`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from transformers import AutoTokenizer, PreTrainedTokenizerBase
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from slimvl.errors import InputError

IMAGE_TOKEN = "<|image_pad|>"


@dataclass
class ModelInputs:
    """One request's tensors, batch size 1."""

    input_ids: torch.Tensor  # (1, L)
    attention_mask: torch.Tensor  # (1, L)
    mm_token_type_ids: torch.Tensor  # (1, L): 1 where an image token stands
    pixel_values: torch.Tensor | None  # (patches, C*T*P*P)
    image_grid_thw: torch.Tensor | None  # (images, 3)

    @property
    def visual_tokens(self) -> int:
        return int(self.mm_token_type_ids.sum())

    def model_kwargs(self) -> dict[str, torch.Tensor]:
        """The tensors as keyword arguments of transformers' `forward`/`generate` (image ones if any)."""
        kwargs = {
            "input_ids": self.input_ids,
            "attention_mask": self.attention_mask,
            "mm_token_type_ids": self.mm_token_type_ids,
        }
        if self.pixel_values is not None:
            kwargs.update(pixel_values=self.pixel_values, image_grid_thw=self.image_grid_thw)
        return kwargs


class Preprocessor:
    """Chat template + image processor + tokenizer of one checkpoint."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, image_processor: Qwen2VLImageProcessorPil):
        if tokenizer.chat_template is None:
            raise InputError("the checkpoint's tokenizer has no chat template")
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)

    @classmethod
    def from_pretrained(cls, path: str | Path) -> Preprocessor:
        path = Path(path)
        tokenizer = AutoTokenizer.from_pretrained(path)
        if tokenizer.chat_template is None:
            tokenizer.chat_template = _read_chat_template(path)
        image_processor = Qwen2VLImageProcessorPil.from_pretrained(path)
        return cls(tokenizer, image_processor)

    def save_pretrained(self, path: str | Path) -> None:
        self.tokenizer.save_pretrained(path)
        self.image_processor.save_pretrained(path)

    def messages(self, n_images: int, question: str) -> list[dict]:
        content = [{"type": "image"} for _ in range(n_images)]
        content.append({"type": "text", "text": question})
        return [{"role": "user", "content": content}]

    def __call__(
        self, images: list[Image.Image], question: str | list[dict], max_pixels: int | None = None
    ) -> ModelInputs:
        """``question``: one user turn after the images, or a whole conversation (`Conversation`, its
        image parts taking ``images`` in order). ``max_pixels``: a tighter cap on each image's resized
        area than the image processor's own."""
        if isinstance(question, str):
            if not question.strip():
                raise InputError("the prompt is empty")
            messages = self.messages(len(images), question)
        else:
            messages = question
            slots = sum(part.get("type") == "image" for m in messages for part in _parts(m))
            if slots != len(images):
                raise InputError(f"the conversation holds {slots} image parts for {len(images)} images")
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        pixel_values = grid_thw = None
        if images:
            size = dict(self.image_processor.size)
            if max_pixels is not None:
                size["longest_edge"] = max(min(max_pixels, size["longest_edge"]), size["shortest_edge"])
            processed = self.image_processor(
                images=[im.convert("RGB") for im in images], return_tensors="pt", size=size
            )
            pixel_values, grid_thw = processed["pixel_values"], processed["image_grid_thw"]
            text = self._expand_image_tokens(text, grid_thw)
        input_ids = self.tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
        mm_types = (input_ids == self.image_token_id).to(torch.int32)
        if pixel_values is not None and int(mm_types.sum()) != int(
            (grid_thw.prod(-1) // self.image_processor.merge_size**2).sum()
        ):
            raise InputError("the chat template did not place one image token per image")
        return ModelInputs(input_ids, torch.ones_like(input_ids), mm_types, pixel_values, grid_thw)

    def _expand_image_tokens(self, text: str, grid_thw: torch.Tensor) -> str:
        merge = self.image_processor.merge_size**2
        parts = text.split(IMAGE_TOKEN)
        if len(parts) - 1 != len(grid_thw):
            raise InputError(f"the prompt holds {len(parts) - 1} image slots for {len(grid_thw)} images")
        out = [parts[0]]
        for thw, rest in zip(grid_thw, parts[1:], strict=True):
            out.append(IMAGE_TOKEN * int(thw.prod() // merge))
            out.append(rest)
        return "".join(out)

    def decode(self, token_ids: list[int]) -> str:
        return self.tokenizer.decode(token_ids, skip_special_tokens=True)


def prompt_text(question: str | list[dict]) -> str:
    """The text of a question, or of every text part of a conversation."""
    if isinstance(question, str):
        return question
    return "\n".join(part["text"] for m in question for part in _parts(m) if part.get("type") == "text")


def _parts(message: dict) -> list[dict]:
    content = message.get("content")
    return [{"type": "text", "text": content}] if isinstance(content, str) else list(content or [])


def _read_chat_template(path: Path) -> str | None:
    jinja = path / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text()
    as_json = path / "chat_template.json"
    if as_json.is_file():
        return json.loads(as_json.read_text()).get("chat_template")
    return None


def load_image(path: str | Path) -> Image.Image:
    """Open an image fully (so a truncated file fails here, with a clear message)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"image not found: {path}")
    try:
        with Image.open(path) as im:
            im.load()
            return im.convert("RGB")
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"cannot read image {path}: {exc}") from exc
