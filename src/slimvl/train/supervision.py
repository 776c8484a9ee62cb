"""Training-only supervision of `builtin:tiny`: dense per-token targets on the merged visual tokens and
the attention hops that teach the model where to look. None of it is part of the saved checkpoint."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from slimvl.data import COLORS, SHAPES, SceneObject, VQAExample
from slimvl.data.grounding import referenced_objects

IGNORE = -100

AUX_WEIGHT = 0.5
MERGE = 2
# Position classes of the auxiliary head: merged-grid rows and columns (the tiny model sees 8 x 8).
GRID_CLASSES = 16


@dataclass(frozen=True)
class Hop:
    """One supervised attention: in `layer`, `head` of the `query` position ("word": the question's
    referring word, "final": the position that predicts the answer) should attend to `target` ("first":
    the visual tokens of the objects the word names, "answer": those of the object the answer is read
    from, "word": the referring word)."""

    layer: int
    head: int
    query: str
    target: str


# Grounding: the word finds its objects (layer 1), the answer position reads the word, which now holds
# what it found (layer 2), then looks at the answer's object (layer 3: for a relation question, the
# named object's neighbor, which needs the named object's place from the hops before).
HOPS = (Hop(1, 0, "word", "first"), Hop(2, 1, "final", "word"), Hop(3, 0, "final", "answer"))
GROUND_WEIGHT = 0.5
FOCUS_MIN_OVERLAP = 0.15
TRAINING_KEYS = ("aux_colors", "aux_shapes", "aux_rows", "aux_cols", "focus", "ground_query")
_COLOR_INDEX = {name: i for i, name in enumerate(COLORS)}


def token_overlaps(
    objects: list[SceneObject], image_size: tuple[int, int], grid_thw: torch.Tensor
) -> torch.Tensor:
    """(tokens, objects): the share of each merged visual token's cell that each object's box covers.

    Token k covers merged-grid cell (k // w, k % w), in processor order.
    """
    _, gh, gw = (int(v) for v in grid_thw)
    rows, cols = gh // MERGE, gw // MERGE
    cell_w, cell_h = image_size[0] / cols, image_size[1] / rows
    k = torch.arange(rows * cols)
    x0, y0 = (k % cols) * cell_w, (k // cols) * cell_h
    boxes = torch.tensor([obj.bbox for obj in objects], dtype=torch.float64).reshape(-1, 4)
    width = (
        torch.minimum(x0[:, None] + cell_w, boxes[:, 2]) - torch.maximum(x0[:, None], boxes[:, 0])
    ).clamp(min=0)
    height = (
        torch.minimum(y0[:, None] + cell_h, boxes[:, 3]) - torch.maximum(y0[:, None], boxes[:, 1])
    ).clamp(min=0)
    return width * height / (cell_w * cell_h)


def token_object_labels(
    objects: list[SceneObject], overlaps: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Color and shape class of the object overlapping each merged visual token most (or "none").

    Dense auxiliary targets for training only: they teach the vision tower what is where long before
    the answer loss alone would.
    """
    colors = torch.full((overlaps.shape[0],), len(COLORS), dtype=torch.long)
    shapes = torch.full((overlaps.shape[0],), len(SHAPES), dtype=torch.long)
    if objects:
        best, index = overlaps.max(dim=1)
        for k in torch.nonzero(best > 0).flatten().tolist():
            obj = objects[int(index[k])]
            colors[k], shapes[k] = _COLOR_INDEX[obj.color], SHAPES.index(obj.shape)
    return colors, shapes


def focus_masks(example: VQAExample, overlaps: torch.Tensor) -> torch.Tensor:
    """(2, tokens) bool: the tokens to look at first and the tokens that hold the answer.

    For a relation question the first are the named object's and the second its neighbor's; for the
    others both are the tokens of every object the question is about (none for "no" and "zero").
    """
    referenced = referenced_objects(example)
    first, answer = (
        (referenced[:1], referenced[1:]) if example.qtype == "relation" else (referenced, referenced)
    )
    covered = overlaps >= FOCUS_MIN_OVERLAP
    return torch.stack([covered[:, first].any(dim=1), covered[:, answer].any(dim=1)])


class AuxHead(torch.nn.Module):
    """Training-only classifier on the merged visual tokens (not part of the saved checkpoint)."""

    def __init__(self, hidden: int):
        super().__init__()
        self.colors = torch.nn.Linear(hidden, len(COLORS) + 1)
        self.shapes = torch.nn.Linear(hidden, len(SHAPES) + 1)
        self.rows = torch.nn.Linear(hidden, GRID_CLASSES)
        self.cols = torch.nn.Linear(hidden, GRID_CLASSES)

    def loss(self, visual_tokens: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        tokens = visual_tokens.float()
        return sum(
            torch.nn.functional.cross_entropy(getattr(self, name)(tokens), batch["aux_" + name])
            for name in ("colors", "shapes", "rows", "cols")
        )


def grounding_loss(
    attentions: tuple[torch.Tensor, ...], batch: dict[str, torch.Tensor], labels: torch.Tensor
) -> torch.Tensor:
    """Per hop of `HOPS`: -log of the attention mass its head puts on its target (mean over examples)."""
    visual = batch["mm_token_type_ids"] == 1
    rows = torch.arange(len(labels), device=labels.device)
    positions = {"word": batch["ground_query"][0], "final": batch["ground_query"][1]}
    targets = {}
    for index, name in enumerate(("first", "answer")):
        targets[name] = torch.zeros_like(visual)
        targets[name][visual] = batch["focus"][index]
    targets["word"] = torch.zeros_like(visual)
    targets["word"][rows, positions["word"]] = True
    losses = []
    for hop in HOPS:
        target = targets[hop.target]
        weights = attentions[hop.layer][rows, hop.head, positions[hop.query]].float()
        mass = (weights * target).sum(1)
        valid = target.any(1)
        losses.append(-mass[valid].clamp_min(1e-6).log().mean() if valid.any() else mass.sum() * 0)
    return torch.stack(losses)
