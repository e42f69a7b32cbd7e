"""Reading a picture of the shapes world back into attributes, by exact classical analysis (no learned model).

1. Background: the background picture (plain or texture, all fixed) with the smallest median pixel distance.
2. Objects: pixels farther than ``OBJECT_DISTANCE`` from that background, split into 8-connected components.
3. Colour: the palette colour nearest to the median of a component's core pixels; the component is then cut to
   the pixels at least half covered by that colour.
4. Shape and size: the rendered template (every shape, both sizes) that best overlaps the component (IoU), placed
   at the component's centroid.
Validated on renders and on the VAE's reconstructions of renders (``python -m rnri_lab.shapes.evaluate``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache

import numpy as np
from PIL import Image

from rnri.shapes.render import background_pixels, coverage
from rnri.shapes.world import BACKGROUNDS, COLOURS, IMAGE_SIZE, SHAPES, SIZES, Scene, Thing, caption

OBJECT_DISTANCE = 40.0  # RGB distance from the background above which a pixel belongs to an object (0..441)
CORE_DISTANCE = 80.0  # pixels this far from the background are an object's core (no anti-aliased edge)
MIN_AREA = 20  # pixels; smaller components are noise (the smallest object covers about 95)
HALF = 0.47  # opacity above which a pixel is the object's: covered at least half (coverage comes in 16ths, so the
# next value below 1/2 is 7/16 = 0.44), with room for the rounding of pixels to 8 bits
SEARCH = 1  # pixels searched around the centroid placement of each template


@dataclass(frozen=True)
class Found:
    """An object the analyzer found."""

    shape: str
    colour: str
    size: str
    x: float  # centre of the best template, pixels
    y: float
    mask: np.ndarray = field(default=None, compare=False, repr=False)  # bool (H, W): the component's pixels
    fit: float = field(default=0.0, compare=False)  # IoU of the best template with the component


@dataclass(frozen=True)
class Analysis:
    """What a picture shows: its background and its objects, left to right."""

    background: str
    things: tuple[Found, ...]
    background_distance: float  # median RGB distance of the picture to the chosen background

    @property
    def scene(self) -> Scene:
        """What the picture shows, as a scene of the world (objects left to right, as the analysis found them)."""
        return Scene(tuple(Thing(f.shape, f.colour, f.size, f.x, f.y) for f in self.things), self.background)


def pixels_of(image: Image.Image) -> np.ndarray:
    if image.size != (IMAGE_SIZE, IMAGE_SIZE):
        image = image.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR)
    return np.asarray(image.convert("RGB"), dtype=np.float32)


def classify_background(pixels: np.ndarray) -> tuple[str, float, np.ndarray]:
    """The background whose picture is nearest in median pixel distance; that distance; per-pixel distances."""
    best = None
    for name in BACKGROUNDS:
        distance = np.linalg.norm(pixels - background_pixels(name), axis=-1)
        median = float(np.median(distance))
        if best is None or median < best[1]:
            best = (name, median, distance)
    return best


def components(mask: np.ndarray) -> list[np.ndarray]:
    """8-connected components of a boolean mask, as boolean masks, largest first."""
    labels = np.zeros(mask.shape, np.int32)
    found = []
    for start in zip(*np.nonzero(mask)):
        if labels[start]:
            continue
        label = len(found) + 1
        labels[start], stack, members = label, [start], []
        while stack:
            y, x = stack.pop()
            members.append((y, x))
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    ny, nx = y + dy, x + dx
                    if 0 <= ny < mask.shape[0] and 0 <= nx < mask.shape[1] and mask[ny, nx] and not labels[ny, nx]:
                        labels[ny, nx] = label
                        stack.append((ny, nx))
        found.append(labels == label)
    return sorted(found, key=lambda m: -int(m.sum()))


def filled(mask: np.ndarray) -> np.ndarray:
    """``mask`` with its holes filled: shapes have none, so a blurred or ringing interior still counts."""
    outside = np.zeros_like(mask)
    for part in components(~mask):
        if part[0].any() or part[-1].any() or part[:, 0].any() or part[:, -1].any():
            outside |= part
    return ~outside


@cache
def template(shape: str, size: str) -> tuple[np.ndarray, float, float]:
    """The shape drawn at the image centre, as a boolean mask, and its centroid (x, y)."""
    centre = IMAGE_SIZE / 2
    mask = coverage(Thing(shape, "white", size, centre, centre)) >= 0.5
    ys, xs = np.nonzero(mask)
    return mask, float(xs.mean()), float(ys.mean())


def shifted(mask: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """``mask`` moved by whole pixels, zeros shifted in."""
    out = np.zeros_like(mask)
    h, w = mask.shape
    out[max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = mask[
        max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
    ]
    return out


def fit_template(component: np.ndarray) -> tuple[str, str, float, float, float]:
    """(shape, size, x, y, IoU) of the template that best overlaps ``component``."""
    ys, xs = np.nonzero(component)
    cx, cy = xs.mean(), ys.mean()
    best = ("", "", 0.0, 0.0, -1.0)
    centre = IMAGE_SIZE / 2
    for shape in SHAPES:
        for size in SIZES:
            mask, tx, ty = template(shape, size)
            for dy in range(-SEARCH, SEARCH + 1):
                for dx in range(-SEARCH, SEARCH + 1):
                    ox, oy = int(round(cx - tx)) + dx, int(round(cy - ty)) + dy
                    placed = shifted(mask, ox, oy)
                    iou = float((placed & component).sum() / max(1, (placed | component).sum()))
                    if iou > best[4]:
                        best = (shape, size, centre + ox, centre + oy, iou)
    return best


def nearest_colour(rgb: np.ndarray) -> str:
    return min(COLOURS, key=lambda name: float(np.linalg.norm(rgb - np.array(COLOURS[name], np.float32))))


def opacity(pixels: np.ndarray, background: str, colour: str) -> np.ndarray:
    """Per pixel, the alpha with which ``colour`` over the background best explains it (H, W): the projection of
    ``pixel - background`` onto ``colour - background``."""
    under = background_pixels(background)
    direction = np.array(COLOURS[colour], np.float32) - under
    return ((pixels - under) * direction).sum(-1) / np.maximum((direction**2).sum(-1), 1e-6)


def analyze(image: Image.Image) -> Analysis:
    """Background and objects of a 64x64 picture of the shapes world (other sizes are resized first)."""
    pixels = pixels_of(image)
    background, median, distance = classify_background(pixels)
    things = []
    for component in components(distance > OBJECT_DISTANCE):
        if component.sum() < MIN_AREA:
            break
        core = component & (distance > CORE_DISTANCE)
        colour = nearest_colour(np.median(pixels[core if core.sum() >= MIN_AREA // 2 else component], axis=0))
        component = filled(component & (opacity(pixels, background, colour) > HALF))  # as the templates
        if component.sum() < MIN_AREA:
            continue
        shape, size, x, y, fit = fit_template(component)
        things.append(Found(shape, colour, size, x, y, component, fit))
    return Analysis(background, tuple(sorted(things, key=lambda t: (t.x, t.y))), median)


def described(image: Image.Image) -> str | None:
    """The caption of ``image`` in the world's own grammar ("a large red circle on a blue background"), read by
    :func:`analyze`; None where the picture is not of the world (most of it farther than ``OBJECT_DISTANCE`` from
    every background: renders and the VAE's reconstructions of them stay within 2) or shows no object."""
    analysis = analyze(image)
    if analysis.background_distance > OBJECT_DISTANCE or not analysis.things:
        return None
    return caption(analysis.scene)


def match(scene: Scene, analysis: Analysis, max_distance: float = 8.0) -> list[Found | None]:
    """For each object of ``scene``, the found object nearest its centre (None when none is within
    ``max_distance`` pixels); each found object is used once."""
    free = list(analysis.things)
    matched = []
    for thing in scene.things:
        near = sorted(free, key=lambda f: np.hypot(f.x - thing.x, f.y - thing.y))
        if near and np.hypot(near[0].x - thing.x, near[0].y - thing.y) <= max_distance:
            matched.append(near[0])
            free.remove(near[0])
        else:
            matched.append(None)
    return matched
