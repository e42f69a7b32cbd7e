"""Scoring one edited photo against the exact ground truth of its ShapeEdit edit."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

from rnri.pipelines.images import psnr
from rnri.shapes.analyze import analyze, match
from rnri.shapes.render import render
from rnri.shapes.world import Scene
from rnri_lab.shapes.edits import Edit

ATTRIBUTES = ("shape", "colour", "size")
REGION_MARGIN = 2  # pixels the edited region grows by before "outside it" begins


@dataclass(frozen=True)
class EditScore:
    """How well one edited photo did what its edit asked, and kept the rest."""

    success: bool  # the analyzer finds the target value of the edited attribute on the edited object
    preservation: float  # fraction of the attributes the edit does not name (background, every object's shape,
    # colour, size) found unchanged
    object_iou: float  # IoU of the edited object's found mask with its ground-truth mask (every object's mean for
    # background edits); 0 where it is not found
    background_psnr: float  # dB, edited vs source photo outside the edited object's old and new region (NaN for
    # background edits)
    target_psnr: float  # dB, edited photo vs the render of the target scene: the ideal edit


Slot = tuple[int | None, str]  # (object index, attribute); (None, "background") is the background


def unnamed(scene: Scene, edit: Edit) -> list[Slot]:
    """The slots of ``scene`` the edit does not name."""
    slots = [(i, key) for i in range(len(scene.things)) for key in ATTRIBUTES] + [(None, "background")]
    return [s for s in slots if s != (edit.index, edit.attribute)]


def slot_value(background: str, things: list, slot: Slot) -> str | None:
    """The value in ``slot`` of a picture with this background and these objects (None: object not found)."""
    index, key = slot
    if index is None:
        return background
    return None if things[index] is None else getattr(things[index], key)


def edited_region(edit: Edit) -> np.ndarray:
    """Pixels the edit may change: the edited object's old and new coverage, grown by ``REGION_MARGIN``; the whole
    picture for a background edit. Bool (H, W)."""
    source, target = render(edit.source), render(edit.target)
    if edit.index is None:
        return np.ones(source.masks[0].shape, bool)
    union = np.maximum(source.masks[edit.index], target.masks[edit.index]) > 0
    grown = Image.fromarray(union.astype(np.uint8) * 255).filter(ImageFilter.MaxFilter(2 * REGION_MARGIN + 1))
    return np.asarray(grown) > 0


def region_mask(edit: Edit) -> Image.Image:
    """The edited region as a mask image (white = edit), what a user would paint: see :func:`edited_region`."""
    return Image.fromarray(edited_region(edit).astype(np.uint8) * 255, "L")


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


def score_edit(edit: Edit, image: Image.Image, photo: Image.Image) -> EditScore:
    """Score ``image``, the edit of ``photo`` (the source render), against ``edit``'s ground truth."""
    analysis = analyze(image)
    found = match(edit.target, analysis)

    def right(slot: Slot) -> bool:
        return slot_value(analysis.background, found, slot) == slot_value(
            edit.target.background, list(edit.target.things), slot
        )

    kept = [right(slot) for slot in unnamed(edit.target, edit)]
    masks = [m >= 0.5 for m in render(edit.target).masks]
    indices = range(len(masks)) if edit.index is None else [edit.index]
    ious = [0.0 if found[i] is None else iou(found[i].mask, masks[i]) for i in indices]
    outside = ~edited_region(edit)
    return EditScore(
        success=right((edit.index, edit.attribute)),
        preservation=float(np.mean(kept)),
        object_iou=float(np.mean(ious)),
        background_psnr=psnr(image, photo, outside) if outside.any() else math.nan,
        target_psnr=psnr(image, render(edit.target).image),
    )
