"""Reading evaluation data: COCO-style captioned images, and PIE-Bench's ``mapping_file.json`` with RLE masks."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Captioned:
    """An image and a caption that describes it."""

    key: str
    path: Path
    caption: str


@dataclass(frozen=True)
class EditCase:
    """One PIE-Bench case: a source image, its prompt, the edited prompt, and the edit region."""

    key: str
    image_path: str  # relative to annotation_images/, as in mapping_file.json
    original_prompt: str  # brackets removed
    editing_prompt: str  # brackets removed
    editing_type_id: str
    mask_rle: tuple[int, ...]  # PIE-Bench's run-length code of the edit region


def coco_captions(captions_file: Path, images_dir: Path) -> list[Captioned]:
    """Images of a COCO captions file (``images`` and ``annotations``), each with its first caption, by image id."""
    data = json.loads(Path(captions_file).read_text())
    first: dict[int, str] = {}
    for note in data["annotations"]:
        first.setdefault(note["image_id"], note["caption"].strip())
    items = [
        Captioned(str(im["id"]), Path(images_dir) / im["file_name"], first[im["id"]])
        for im in sorted(data["images"], key=lambda im: im["id"])
        if im["id"] in first
    ]
    missing = [str(item.path) for item in items if not item.path.is_file()]
    if missing:
        raise ValueError(f"{len(missing)} image(s) of {captions_file} are missing, e.g. {missing[0]}")
    return items


def strip_brackets(prompt: str) -> str:
    """PIE-Bench marks the words that differ between prompts with [ ]; the prompts themselves go without them."""
    return re.sub(r"\s+", " ", prompt.replace("[", "").replace("]", "")).strip()


def pie_bench_cases(root: Path, categories: tuple[str, ...] | None = None) -> list[EditCase]:
    """The cases of ``root/mapping_file.json`` (PIE-Bench layout), optionally only some editing types."""
    mapping = json.loads((Path(root) / "mapping_file.json").read_text())
    return [
        EditCase(
            key,
            item["image_path"],
            strip_brackets(item["original_prompt"]),
            strip_brackets(item["editing_prompt"]),
            str(item["editing_type_id"]),
            tuple(item["mask"]),
        )
        for key, item in mapping.items()
        if categories is None or str(item["editing_type_id"]) in categories
    ]


def mask_decode(rle: tuple[int, ...] | list[int], shape: tuple[int, int] = (512, 512)) -> np.ndarray:
    """PIE-Bench's mask: ``[start, length, start, length, ...]`` over the row-major image, 1 in the edit region.

    As in PIE-Bench's own evaluation, the one-pixel border is set to 1 ("to avoid annotation errors in boundary").
    Returns float32 (H, W).
    """
    flat = np.zeros(shape[0] * shape[1], dtype=np.float32)
    for start, length in zip(rle[0::2], rle[1::2]):
        flat[start : start + length] = 1.0
    mask = flat.reshape(shape)
    mask[0, :] = mask[-1, :] = mask[:, 0] = mask[:, -1] = 1.0
    return mask


def mask_encode(mask: np.ndarray) -> list[int]:
    """The inverse of :func:`mask_decode` (border aside): runs of 1 in the row-major mask as start, length pairs."""
    flat = np.concatenate([[0], np.asarray(mask, dtype=bool).ravel().astype(np.int8), [0]])
    edges = np.flatnonzero(np.diff(flat))
    starts, ends = edges[0::2], edges[1::2]
    return [int(v) for pair in zip(starts, ends - starts) for v in pair]
