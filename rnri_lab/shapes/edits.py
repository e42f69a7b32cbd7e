"""ShapeEdit: edits of rendered photos with exact ground truth (what must change, what must stay).

A source photo is a held-out scene (at least one object whose (colour, shape) pair never appeared in training);
each edit names one change: an object's colour, shape or size, the background, or one object of two. The target
scene is the source with that change, so the ideal edited photo is its render, pixel for pixel.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rnri.shapes.world import BACKGROUNDS, COLOURS, SHAPES, SIZES, Scene, fits, random_scene

KINDS = ("colour", "shape", "size", "background", "one of two")


@dataclass(frozen=True)
class Edit:
    """One edit: the change from ``source`` to ``target``."""

    kind: str  # one of KINDS
    source: Scene
    target: Scene
    index: int | None  # the edited object (same index in both scenes); None for a background edit

    @property
    def attribute(self) -> str:
        """The attribute that changes: "colour", "shape", "size" or "background"."""
        if self.index is None:
            return "background"
        before, after = self.source.things[self.index], self.target.things[self.index]
        return next(key for key in ("colour", "shape", "size") if getattr(before, key) != getattr(after, key))


def distinct(scene: Scene) -> bool:
    """Objects stand out from the background and differ in (shape, colour), so a caption names each one."""
    if any(t.colour == scene.background for t in scene.things):
        return False
    pairs = [(t.shape, t.colour) for t in scene.things]
    return len(set(pairs)) == len(pairs) and fits(list(scene.things))


def change(rng: np.random.Generator, source: Scene, attribute: str, index: int | None) -> Scene | None:
    """``source`` with ``attribute`` of object ``index`` (or the background) set to another random value that
    leaves a valid scene; None when no value does."""
    if attribute == "background":
        options = [b for b in BACKGROUNDS if b != source.background]
        candidates = [Scene(source.things, b) for b in options]
    else:
        values = {"colour": list(COLOURS), "shape": list(SHAPES), "size": list(SIZES)}[attribute]
        current = getattr(source.things[index], attribute)
        candidates = [source.with_thing(index, **{attribute: v}) for v in values if v != current]
    candidates = [c for c in candidates if distinct(c)]
    return candidates[rng.integers(len(candidates))] if candidates else None


def edits_of(rng: np.random.Generator, source: Scene) -> list[Edit]:
    """Every kind of edit that applies to ``source``: one-object scenes get colour, shape, size and background
    edits of their object; two-object scenes an edit of one object's colour or shape (chosen at random)."""
    edits = []
    if len(source.things) == 1:
        for kind in ("colour", "shape", "size", "background"):
            index = None if kind == "background" else 0
            target = change(rng, source, kind, index)
            if target is not None:
                edits.append(Edit(kind, source, target, index))
    else:
        index = int(rng.integers(2))
        target = change(rng, source, ("colour", "shape")[rng.integers(2)], index)
        if target is not None:
            edits.append(Edit("one of two", source, target, index))
    return edits


def shape_edit(seed: int, photos: int) -> list[tuple[Scene, list[Edit]]]:
    """The benchmark: ``photos`` held-out source scenes (two thirds with one object, one third with two), each
    with its edits. The same seed gives the same benchmark."""
    rng = np.random.default_rng(seed)
    groups = []
    for i in range(photos):
        source = random_scene(rng, "test", objects=1 if i % 3 else 2)
        groups.append((source, edits_of(rng, source)))
    return groups
