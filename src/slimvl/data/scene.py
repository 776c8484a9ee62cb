"""Scene vocabulary (colors, shapes, sizes), non-overlapping layout and the geometry the questions ask about."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

from slimvl.errors import InputError

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 165, 60),
    "blue": (40, 85, 225),
    "yellow": (235, 195, 15),
    "purple": (145, 55, 190),
    "orange": (245, 130, 20),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross")
# Side of an object's square bounding box as a fraction of min(width, height): a large object covers at
# most 0.2**2 = 4% of the image, so one object never dominates the picture.
SIZES: dict[str, float] = {"small": 0.12, "large": 0.2}
MIN_OBJECTS, MAX_OBJECTS = 3, 6
PAIRS: tuple[tuple[str, str], ...] = tuple((color, shape) for color in COLORS for shape in SHAPES)

# A position question is asked only when the object's center is this far (fraction of the image
# dimension) from the middle line, so "left"/"right" is never a judgment call.
POSITION_MARGIN = 0.15
DIRECTIONS: tuple[str, ...] = ("left", "right", "above", "below", "nearest")
_AXES = {"left": (-1.0, 0.0), "right": (1.0, 0.0), "above": (0.0, -1.0), "below": (0.0, 1.0)}
# Relation robustness: the answer must be within 35° of the direction's axis, be the nearest object within
# 55° of it, and be at least 10% closer than the next object within 55°. The answer is therefore also the
# nearest object within 45°, whichever of these cones a reader has in mind.
_NARROW_COS, _WIDE_COS = math.cos(math.radians(35)), math.cos(math.radians(55))
_UNIQUE_RATIO = 0.9
_MIN_SIDE = 64


@dataclass(frozen=True)
class Slot:
    """A place for one object: its square bounding box (pixels) and size class."""

    size: str
    left: int
    top: int
    extent: int

    @property
    def bbox(self) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1) with x1, y1 exclusive."""
        return self.left, self.top, self.left + self.extent, self.top + self.extent

    @property
    def center(self) -> tuple[float, float]:
        return self.left + self.extent / 2, self.top + self.extent / 2


@dataclass(frozen=True)
class SceneObject(Slot):
    """One drawn object; within a scene no two objects share (color, shape)."""

    color: str
    shape: str

    @property
    def label(self) -> str:
        return f"{self.color} {self.shape}"


def check_size(size: tuple[int, int]) -> tuple[int, int]:
    """Validate an image size given as (width, height)."""
    width, height = size
    if not (isinstance(width, int) and isinstance(height, int)) or min(width, height) < _MIN_SIDE:
        raise InputError(f"image size: got {size!r}, allowed: (width, height) integers >= {_MIN_SIDE}")
    return width, height


def layout(rng: random.Random, n: int, size: tuple[int, int]) -> list[Slot]:
    """n random slots whose boxes keep a gap of 4% of min(w, h) between each other and from the border."""
    while True:
        slots = _try_layout(rng, n, size)
        if slots is not None:
            return slots


def _try_layout(rng: random.Random, n: int, size: tuple[int, int]) -> list[Slot] | None:
    width, height = size
    side = min(width, height)
    gap = 0.04 * side
    border = math.ceil(0.02 * side)
    slots: list[Slot] = []
    for _ in range(n):
        name = rng.choice(tuple(SIZES))
        extent = round(SIZES[name] * side)
        for _attempt in range(100):
            slot = Slot(
                name,
                rng.randint(border, width - border - extent),
                rng.randint(border, height - border - extent),
                extent,
            )
            if all(_apart(slot, other, gap) for other in slots):
                slots.append(slot)
                break
        else:
            return None
    return slots


def _apart(a: Slot, b: Slot, gap: float) -> bool:
    ax0, ay0, ax1, ay1 = a.bbox
    bx0, by0, bx1, by1 = b.bbox
    return ax1 + gap <= bx0 or bx1 + gap <= ax0 or ay1 + gap <= by0 or by1 + gap <= ay0


def clear_half(center: tuple[float, float], size: tuple[int, int], axis: str) -> str | None:
    """ "left"/"right" (axis "horizontal") or "top"/"bottom" ("vertical") if the center is clearly in that half."""
    coordinate, extent, names = (
        (center[0], size[0], ("left", "right"))
        if axis == "horizontal"
        else (center[1], size[1], ("top", "bottom"))
    )
    offset = coordinate / extent - 0.5
    if abs(offset) <= POSITION_MARGIN:
        return None
    return names[offset > 0]


def neighbor(centers: Sequence[tuple[float, float]], anchor: int, direction: str) -> int | None:
    """Index of the object unambiguously nearest to centers[anchor] in direction, or None.

    "left" etc. mean: the nearest object whose direction from the anchor is within 45° of that axis;
    "nearest" means the nearest object overall. None when that answer is not robust (see _NARROW_COS).
    """
    ax, ay = centers[anchor]
    candidates: list[tuple[float, float, int]] = []  # (distance, cosine to the axis, index)
    for i, (x, y) in enumerate(centers):
        if i == anchor:
            continue
        dx, dy = x - ax, y - ay
        distance = math.hypot(dx, dy)
        if direction == "nearest":
            candidates.append((distance, 1.0, i))
            continue
        ux, uy = _AXES[direction]
        cosine = (dx * ux + dy * uy) / distance
        if cosine > _WIDE_COS:
            candidates.append((distance, cosine, i))
    if not candidates:
        return None
    candidates.sort()
    distance, cosine, index = candidates[0]
    if cosine < _NARROW_COS or (len(candidates) > 1 and distance > _UNIQUE_RATIO * candidates[1][0]):
        return None
    return index
