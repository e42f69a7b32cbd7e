"""A captioned world of coloured shapes on backgrounds, with the exact ground truth of every picture.

A scene is one or two objects (shape, colour, size, centre) on a background; its caption names every attribute,
objects from left to right: "a small red circle on a blue background", "a large yellow star and a small green
square on a striped background". Scenes are drawn from a seeded generator; a fixed set of (colour, shape) pairs is
never drawn for training (``HELD_OUT``), so a benchmark on them tests composition, not memory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

IMAGE_SIZE = 64  # pixels per side of every render

SHAPES = ("circle", "square", "triangle", "star", "heart")
COLOURS: dict[str, tuple[int, int, int]] = {  # object colours, sRGB
    "red": (220, 40, 40),
    "orange": (245, 140, 30),
    "yellow": (240, 220, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "purple": (140, 60, 190),
    "pink": (245, 130, 190),
    "white": (245, 245, 245),
}
SIZES: dict[str, float] = {"small": 9.0, "large": 15.0}  # radius in pixels of the circle the shape fits in
PLAIN_BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "gray": (128, 128, 128),
    "black": (20, 20, 20),
    "white": (245, 245, 245),
    "blue": (40, 80, 220),
    "green": (40, 170, 60),
}
TEXTURED_BACKGROUNDS = ("striped", "checkered", "gradient")  # drawn by rnri.shapes.render.background_pixels
BACKGROUNDS = tuple(PLAIN_BACKGROUNDS) + TEXTURED_BACKGROUNDS

# (colour, shape) pairs never rendered for training; the benchmark and the held-out captions use them.
HELD_OUT: frozenset[tuple[str, str]] = frozenset(
    {
        ("red", "star"),
        ("orange", "heart"),
        ("yellow", "square"),
        ("green", "circle"),
        ("blue", "triangle"),
        ("purple", "star"),
    }
)
MARGIN = 2.0  # pixels kept free between an object's circle and the image border
GAP = 3.0  # pixels kept free between the circles of two objects


@dataclass(frozen=True)
class Thing:
    """One object of a scene."""

    shape: str  # one of SHAPES
    colour: str  # one of COLOURS
    size: str  # one of SIZES
    x: float  # centre, pixels from the left edge
    y: float  # centre, pixels from the top edge

    @property
    def radius(self) -> float:
        return SIZES[self.size]

    @property
    def words(self) -> str:
        """ "small red circle"."""
        return f"{self.size} {self.colour} {self.shape}"


@dataclass(frozen=True)
class Scene:
    """A picture's whole ground truth: its objects, left to right, and its background."""

    things: tuple[Thing, ...]
    background: str  # one of BACKGROUNDS

    @property
    def caption(self) -> str:
        return caption(self)

    def with_thing(self, index: int, **changes) -> Scene:
        """This scene with object ``index`` changed (e.g. ``colour="blue"``)."""
        things = list(self.things)
        things[index] = replace(things[index], **changes)
        return Scene(tuple(things), self.background)


def caption(scene: Scene) -> str:
    """The scene's caption; objects are named left to right."""
    objects = " and ".join(f"a {thing.words}" for thing in scene.things)
    return f"{objects} on a {scene.background} background"


def vocabulary() -> list[str]:
    """Every word a caption can use, in a fixed order."""
    return ["a", "and", "on", "background", *SIZES, *COLOURS, *SHAPES, *[b for b in BACKGROUNDS if b not in COLOURS]]


def allowed(colour: str, shape: str, background: str, split: str) -> bool:
    """Whether an object may be drawn in ``split``: it must stand out from the background, and its (colour, shape)
    pair is held out of "train" and required by "test"; "all" takes both."""
    if colour == background:
        return False
    held = (colour, shape) in HELD_OUT
    return {"train": not held, "test": held, "all": True}[split]


def fits(things: list[Thing]) -> bool:
    """Every object inside the image with its margin, and no two objects' circles closer than ``GAP``."""
    for thing in things:
        r = thing.radius + MARGIN
        if not (r <= thing.x <= IMAGE_SIZE - r and r <= thing.y <= IMAGE_SIZE - r):
            return False
    for i, a in enumerate(things):
        for b in things[i + 1 :]:
            if math.hypot(a.x - b.x, a.y - b.y) < a.radius + b.radius + GAP:
                return False
    return True


def place(rng: np.random.Generator, size: str) -> tuple[float, float]:
    """A centre drawn uniformly over the positions where an object of ``size`` fits (whole pixels)."""
    r = SIZES[size] + MARGIN
    lo, hi = math.ceil(r), math.floor(IMAGE_SIZE - r)
    return float(rng.integers(lo, hi + 1)), float(rng.integers(lo, hi + 1))


def random_thing(rng: np.random.Generator, background: str, split: str) -> Thing:
    """One object with attributes allowed in ``split`` and a random centre (not yet checked against others)."""
    while True:
        shape, colour = SHAPES[rng.integers(len(SHAPES))], list(COLOURS)[rng.integers(len(COLOURS))]
        if allowed(colour, shape, background, split):
            size = list(SIZES)[rng.integers(len(SIZES))]
            return Thing(shape, colour, size, *place(rng, size))


def random_scene(rng: np.random.Generator, split: str = "train", objects: int | None = None) -> Scene:
    """A scene of ``objects`` objects (1 or 2; random when None). In "test" at least one object is a held-out pair.

    The two objects differ in shape or colour, so a caption tells them apart.
    """
    objects = objects or int(rng.integers(1, 3))
    while True:
        background = BACKGROUNDS[rng.integers(len(BACKGROUNDS))]
        first = random_thing(rng, background, split)
        things = [first]
        if objects == 2:
            second = random_thing(rng, background, "train" if split == "test" else split)
            things.append(second)
            if (first.shape, first.colour) == (second.shape, second.colour):
                continue
        if fits(things):
            return Scene(tuple(sorted(things, key=lambda t: (t.x, t.y))), background)


def scenes(seed: int, count: int, split: str = "train", objects: int | None = None) -> list[Scene]:
    """``count`` scenes from a generator seeded with ``seed``: the same seed gives the same scenes."""
    rng = np.random.default_rng(seed)
    return [random_scene(rng, split, objects) for _ in range(count)]
