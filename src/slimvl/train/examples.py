"""Training examples of `builtin:tiny`: encoded with their supervision targets, drawn per question type,
streamed in seed order and batched."""

from __future__ import annotations

import random

import torch
from torch.utils.data import IterableDataset, get_worker_info

from slimvl.data import QUESTION_TYPES, SPLITS, make_example, question_type
from slimvl.data.grounding import referring_word
from slimvl.models.preprocess import Preprocessor
from slimvl.train.supervision import (
    IGNORE,
    MERGE,
    TRAINING_KEYS,
    focus_masks,
    token_object_labels,
    token_overlaps,
)


def encode_example(preprocessor: Preprocessor, seed: int) -> dict[str, torch.Tensor]:
    """Prompt tokens + answer + <|im_end|>; labels only on the answer part."""
    example = make_example(seed)
    inputs = preprocessor([example.image], example.question)
    tokenizer = preprocessor.tokenizer
    answer = tokenizer(example.answer, add_special_tokens=False, return_tensors="pt")["input_ids"][0]
    target = torch.cat([answer, torch.tensor([tokenizer.eos_token_id])])
    input_ids = torch.cat([inputs.input_ids[0], target])
    labels = torch.full_like(input_ids, IGNORE)
    labels[-len(target) :] = target
    mm = torch.cat([inputs.mm_token_type_ids[0], torch.zeros_like(target, dtype=torch.int32)])
    overlaps = token_overlaps(example.objects, example.image.size, inputs.image_grid_thw[0])
    colors, shapes = token_object_labels(example.objects, overlaps)
    cols = int(inputs.image_grid_thw[0, 2]) // MERGE
    word = tokenizer(" " + referring_word(example), add_special_tokens=False)["input_ids"]
    word_position = int(torch.nonzero(inputs.input_ids[0] == word[-1]).max())
    return {
        "aux_colors": colors,
        "aux_shapes": shapes,
        "aux_rows": torch.div(torch.arange(len(colors)), cols, rounding_mode="floor"),
        "aux_cols": torch.arange(len(colors)) % cols,
        "focus": focus_masks(example, overlaps),
        "ground_query": torch.tensor([[word_position], [len(inputs.input_ids[0]) - 1]]),  # (hops, 1)
        "input_ids": input_ids,
        "labels": labels,
        "mm_token_type_ids": mm,
        "pixel_values": inputs.pixel_values,
        "image_grid_thw": inputs.image_grid_thw,
    }


def parse_type_weights(text: str | None) -> dict[str, float]:
    """``"position=3,relation=3"`` → a weight per question type (unnamed types 1)."""
    weights = dict.fromkeys(QUESTION_TYPES, 1.0)
    for part in (text or "").split(","):
        if not part.strip():
            continue
        name, _, value = part.partition("=")
        name = name.strip()
        if name not in weights:
            raise ValueError(f"type-weights: got type {name!r}, allowed: {', '.join(QUESTION_TYPES)}")
        try:
            weights[name] = float(value)
        except ValueError:
            raise ValueError(f"type-weights: got {part!r}, allowed: TYPE=NUMBER") from None
        if not weights[name] >= 0:
            raise ValueError(f"type-weights: got {name}={value}, allowed: a number >= 0")
    if not max(weights.values()) > 0:
        raise ValueError("type-weights: every type has weight 0, allowed: at least one > 0")
    return weights


_ACCEPT_SALT = 0x5EED  # the acceptance draw must not reuse the example's own random stream


def accepted(seed: int, weights: dict[str, float]) -> bool:
    """Whether the train example of `seed` is used under `weights`: its type is drawn without rendering
    it, and kept with probability weight / the largest weight (deterministic per seed)."""
    keep = weights[question_type(seed)] / max(weights.values())
    return random.Random(seed ^ _ACCEPT_SALT).random() < keep


class TrainStream(IterableDataset):
    """Train-split examples from `first_seed` on, in seed order, split across loader workers; with type
    weights, an example is skipped unless `accepted` (hard types can be seen more often)."""

    def __init__(
        self,
        preprocessor: Preprocessor,
        first_seed: int,
        count: int,
        weights: dict[str, float] | None = None,
    ):
        self.preprocessor, self.first_seed, self.count = preprocessor, first_seed, count
        self.weights = weights

    def __iter__(self):
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        uniform = self.weights is None or len(set(self.weights.values())) == 1
        remaining = -(-self.count // workers)
        for seed in range(self.first_seed + worker, SPLITS["train"].stop, workers):
            if remaining == 0:
                return
            if uniform or accepted(seed, self.weights):
                remaining -= 1
                yield {**encode_example(self.preprocessor, seed), "seed": torch.tensor([seed])}


def next_train_seed(stages: list[dict]) -> int:
    """The first train seed after every seed the earlier stages used (stages before type weights
    existed used exactly their number of examples)."""
    seed = SPLITS["train"].start
    for stage in stages:
        seed = stage.get("next_seed", seed + stage["examples"])
    return seed


def collate(items: list[dict[str, torch.Tensor]], pad_id: int) -> dict[str, torch.Tensor]:
    length = max(len(it["input_ids"]) for it in items)

    def pad(key: str, value: int) -> torch.Tensor:
        out = torch.full((len(items), length), value, dtype=items[0][key].dtype)
        for i, it in enumerate(items):
            out[i, : len(it[key])] = it[key]
        return out

    mask = torch.zeros((len(items), length), dtype=torch.long)
    for i, it in enumerate(items):
        mask[i, : len(it["input_ids"])] = 1
    return {
        "input_ids": pad("input_ids", pad_id),
        "labels": pad("labels", IGNORE),
        "mm_token_type_ids": pad("mm_token_type_ids", 0),
        "attention_mask": mask,
        "pixel_values": torch.cat([it["pixel_values"] for it in items]),
        "image_grid_thw": torch.cat([it["image_grid_thw"] for it in items]),
        **{key: torch.cat([it[key] for it in items], dim=-1) for key in TRAINING_KEYS},
        **({"seed": torch.cat([it["seed"] for it in items])} if "seed" in items[0] else {}),
    }
