"""The standard scenario: one 448×448 image, a ~30-token question, 64 new tokens, EOS ignored.

The question is ~30 tokens with the builtin tokenizer (34). Its small vocabulary spells words outside
the VQA task letter by letter, so a sentence of ~30 words, ~30 tokens for Qwen's tokenizer, is ~90 here:
a prompt three times longer than the scenario's would make the prefill, and the share of it that visual
token sparsification can remove, unlike the one a real checkpoint sees.

Every run gets a different image (a different synthetic scene): OpenVINO GenAI caches the vision result
of a repeated image, so repeating one image would flatter its time to first token. Run `i` of every row
sees the same image, so the rows compare on the same inputs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from slimvl.data import make_example

QUESTION = "How many shapes can you see in this picture, and what colors are they?"


@dataclass(frozen=True)
class Scenario:
    max_new_tokens: int = 64
    question: str = QUESTION
    image_size: tuple[int, int] = (448, 448)
    first_seed: int = 7_000_000  # outside the VQA splits' seed ranges
    ignore_eos: bool = True

    def image_seed(self, index: int) -> int:
        """Seed of image `index`: 0 is the warm-up, 1..runs the measured runs."""
        return self.first_seed + index

    def write_images(self, directory: Path, runs: int) -> list[Path]:
        """PNG files (lossless) for the warm-up and each measured run: [warm-up, run 1, ..., run N]."""
        paths = []
        for index in range(runs + 1):
            path = directory / f"image-{index}.png"
            make_example(self.image_seed(index), self.image_size).image.save(path)
            paths.append(path)
        return paths

    def to_dict(self, runs: int) -> dict[str, Any]:
        out = asdict(self)
        out["image_size"] = list(self.image_size)
        out["warmup_runs"] = 1
        out["image_seeds"] = [self.image_seed(i) for i in range(runs + 1)]
        return out
