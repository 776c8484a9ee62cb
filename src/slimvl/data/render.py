"""Drawing scenes with PIL: a light, faintly textured background and flat-colored shapes."""

from __future__ import annotations

import math
import random
from collections.abc import Iterable

import numpy as np
from PIL import Image, ImageDraw

from slimvl.data.scene import COLORS, SceneObject, check_size

BACKGROUND: tuple[int, int, int] = (238, 238, 234)
_TEXTURES = ("plain", "noise", "stripes")


def blank_image(size: tuple[int, int] = (448, 448)) -> Image.Image:
    """The plain default background without objects, for checking what a model answers blind."""
    return Image.new("RGB", check_size(size), BACKGROUND)


def render_scene(objects: Iterable[SceneObject], size: tuple[int, int], rng: random.Random) -> Image.Image:
    """Draw objects on a background whose tint and texture are drawn from rng."""
    image = _background(check_size(size), rng)
    draw = ImageDraw.Draw(image)
    for obj in objects:
        _draw_object(draw, obj)
    return image


def _background(size: tuple[int, int], rng: random.Random) -> Image.Image:
    width, height = size
    base = tuple(rng.randint(226, 242) for _ in range(3))
    texture = rng.choice(_TEXTURES)
    if texture == "plain":
        return Image.new("RGB", size, base)
    if texture == "noise":
        generator = np.random.default_rng(rng.getrandbits(64))
        shade = generator.integers(0, 13, size=(height, width), dtype=np.uint8)
    else:
        period, amplitude = rng.randint(6, 24), rng.randint(4, 8)
        xs, ys = np.arange(width)[None, :], np.arange(height)[:, None]
        phase = {"vertical": xs, "horizontal": ys, "diagonal": xs + ys}[
            rng.choice(("vertical", "horizontal", "diagonal"))
        ]
        shade = np.broadcast_to(((phase // period) % 2 * amplitude).astype(np.uint8), (height, width))
    # base + shade stays below 256: base <= 242 and shade <= 12.
    return Image.fromarray(shade[..., None] + np.array(base, dtype=np.uint8), "RGB")


def _draw_object(draw: ImageDraw.ImageDraw, obj: SceneObject) -> None:
    fill = COLORS[obj.color]
    x0, y0 = obj.left, obj.top
    x1, y1 = x0 + obj.extent - 1, y0 + obj.extent - 1  # PIL boxes are inclusive
    cx, cy = obj.center
    if obj.shape == "circle":
        draw.ellipse((x0, y0, x1, y1), fill=fill)
    elif obj.shape == "square":
        draw.rectangle((x0, y0, x1, y1), fill=fill)
    elif obj.shape == "triangle":
        draw.polygon([(cx, y0), (x1, y1), (x0, y1)], fill=fill)
    elif obj.shape == "star":
        outer = obj.extent / 2
        points = []
        for k in range(10):
            radius = outer if k % 2 == 0 else 0.45 * outer
            angle = -math.pi / 2 + k * math.pi / 5
            points.append((cx + radius * math.cos(angle), cy + radius * math.sin(angle)))
        draw.polygon(points, fill=fill)
    elif obj.shape == "cross":
        arm = obj.extent / 6  # half the bar thickness: bars are a third of the box wide
        draw.rectangle((cx - arm, y0, cx + arm, y1), fill=fill)
        draw.rectangle((x0, cy - arm, x1, cy + arm), fill=fill)
    else:
        raise ValueError(f"unknown shape {obj.shape!r}")
