"""Drawing scenes: anti-aliased RGB pictures and each object's exact coverage mask.

Every shape is a polygon in units of the object's radius, filled at ``SUPERSAMPLE`` times the resolution and
averaged down, so an edge pixel holds the fraction of it the shape covers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache

import numpy as np
from PIL import Image, ImageDraw

from rnri.shapes.world import COLOURS, IMAGE_SIZE, PLAIN_BACKGROUNDS, SHAPES, Scene, Thing

SUPERSAMPLE = 4
STRIPE_PERIOD = 8  # pixels, along the diagonal
CHECK_SIZE = 8  # pixels per check
TEXTURE_COLOURS: dict[str, tuple[tuple[int, int, int], tuple[int, int, int]]] = {
    "striped": ((70, 70, 90), (125, 125, 145)),  # dark and light stripe
    "checkered": ((90, 60, 40), (150, 110, 70)),  # dark and light check
    "gradient": ((20, 40, 60), (110, 150, 170)),  # top and bottom row
}


def outline(shape: str, points: int = 64) -> list[tuple[float, float]]:
    """The shape's polygon in units of its radius, centred on (0, 0), y pointing down."""
    if shape == "circle":
        return [(0.85 * math.cos(a), 0.85 * math.sin(a)) for a in np.linspace(0, 2 * math.pi, points, endpoint=False)]
    if shape == "square":
        return [(-0.7, -0.7), (0.7, -0.7), (0.7, 0.7), (-0.7, 0.7)]
    if shape == "triangle":  # equilateral, apex up, inscribed in the unit circle shifted to centre its height
        return [(0.0, -0.95), (0.95 * math.sqrt(3) / 2, 0.55), (-0.95 * math.sqrt(3) / 2, 0.55)]
    if shape == "star":  # five points, inner radius 0.45
        return [
            (
                (1.0 if k % 2 == 0 else 0.45) * math.sin(k * math.pi / 5),
                -(1.0 if k % 2 == 0 else 0.45) * math.cos(k * math.pi / 5),
            )
            for k in range(10)
        ]
    if shape == "heart":  # the classic parametric heart, scaled into the unit circle
        ts = np.linspace(0, 2 * math.pi, points, endpoint=False)
        xs, ys = 16 * np.sin(ts) ** 3, -(13 * np.cos(ts) - 5 * np.cos(2 * ts) - 2 * np.cos(3 * ts) - np.cos(4 * ts))
        ys = ys - (ys.max() + ys.min()) / 2
        scale = 0.95 / max(np.abs(xs).max(), np.abs(ys).max())
        return [(float(x * scale), float(y * scale)) for x, y in zip(xs, ys)]
    raise ValueError(f"unknown shape {shape!r}; shapes are {SHAPES}")


def coverage(thing: Thing, size: int = IMAGE_SIZE) -> np.ndarray:
    """The fraction of each pixel the object covers, float32 (size, size) in [0, 1]."""
    big = Image.new("L", (size * SUPERSAMPLE, size * SUPERSAMPLE), 0)
    scale = thing.radius * SUPERSAMPLE
    cx, cy = thing.x * SUPERSAMPLE, thing.y * SUPERSAMPLE
    ImageDraw.Draw(big).polygon([(cx + u * scale, cy + v * scale) for u, v in outline(thing.shape)], fill=255)
    pixels = np.asarray(big, dtype=np.float32).reshape(size, SUPERSAMPLE, size, SUPERSAMPLE)
    return pixels.mean(axis=(1, 3)) / 255.0


@cache
def background_pixels(background: str, size: int = IMAGE_SIZE) -> np.ndarray:
    """The background alone, float32 (size, size, 3) in 0..255; textures are fixed (no random phase)."""
    if background in PLAIN_BACKGROUNDS:
        return np.broadcast_to(np.array(PLAIN_BACKGROUNDS[background], np.float32), (size, size, 3)).copy()
    if background not in TEXTURE_COLOURS:
        raise ValueError(f"unknown background {background!r}")
    dark, light = (np.array(c, np.float32) for c in TEXTURE_COLOURS[background])
    ys, xs = np.mgrid[0:size, 0:size]
    if background == "gradient":
        weight = (ys / (size - 1))[..., None]
    elif background == "striped":
        weight = (((xs + ys) // (STRIPE_PERIOD // 2)) % 2)[..., None].astype(np.float32)
    else:
        weight = (((xs // CHECK_SIZE) + (ys // CHECK_SIZE)) % 2)[..., None].astype(np.float32)
    return (dark * (1 - weight) + light * weight).astype(np.float32)


@dataclass(frozen=True)
class Render:
    """A drawn scene."""

    image: Image.Image  # RGB, IMAGE_SIZE x IMAGE_SIZE
    masks: tuple[np.ndarray, ...]  # per object (in scene order), coverage float32 (H, W) in [0, 1]


def render(scene: Scene) -> Render:
    """Draw ``scene``: objects alpha-composited over the background with their coverage as alpha."""
    pixels = background_pixels(scene.background).copy()
    masks = []
    for thing in scene.things:
        alpha = coverage(thing)[..., None]
        pixels = pixels * (1 - alpha) + np.array(COLOURS[thing.colour], np.float32) * alpha
        masks.append(alpha[..., 0])
    image = Image.fromarray(np.clip(np.round(pixels), 0, 255).astype(np.uint8), "RGB")
    return Render(image, tuple(masks))
