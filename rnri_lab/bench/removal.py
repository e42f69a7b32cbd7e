"""``python -m rnri_lab.bench.removal``: removing one object of two from a shapes photo, by each way rnri offers.

Source photos are renders of held-out two-object scenes; each edit removes one object (chosen at random), so the
ideal result is the render of the scene without it. Ways: regenerating under the caption without the object
(plain, with attention control, inside the painted region), and LEdits++-style negative directions on the
object's words from the source caption (with and without control). Scored by the exact analyzer: success = exactly
the kept object (its shape, colour and size) on the same background; kept = the kept object and the background
unchanged, whatever else is there; background PSNR outside the removed object's region.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFilter

import rnri
from rnri.core.counting import count_unet_calls
from rnri.core.directions import Direction, Directions
from rnri.pipelines.attention import AttentionControl
from rnri.pipelines.images import psnr
from rnri.shapes.analyze import analyze, match
from rnri.shapes.render import render
from rnri.shapes.world import Scene, scenes

MARGIN = 2  # pixels the removed object's region grows by before "outside it" begins (as ShapeEdit)


@dataclass(frozen=True)
class Removal:
    """Remove object ``index`` of ``source``."""

    source: Scene
    index: int

    @property
    def target(self) -> Scene:
        return Scene(tuple(t for i, t in enumerate(self.source.things) if i != self.index), self.source.background)


def removals(seed: int, photos: int) -> list[Removal]:
    """``photos`` held-out two-object scenes, each with one object to remove; the same seed gives the same set."""
    rng = np.random.default_rng(seed)
    return [Removal(scene, int(rng.integers(2))) for scene in scenes(seed, photos, "test", objects=2)]


def region(removal: Removal) -> np.ndarray:
    """The removed object's pixels grown by ``MARGIN``: bool (H, W)."""
    covered = render(removal.source).masks[removal.index] > 0
    grown = Image.fromarray(covered.astype(np.uint8) * 255).filter(ImageFilter.MaxFilter(2 * MARGIN + 1))
    return np.asarray(grown) > 0


@dataclass(frozen=True)
class RemovalScore:
    """How well one removal did."""

    success: bool  # exactly the kept object, unchanged, on the same background
    kept: bool  # the kept object (shape, colour, size) and the background found unchanged
    background_psnr: float  # dB, against the photo, outside the removed object's region
    target_psnr: float  # dB, against the render of the scene without the object


def score(removal: Removal, image: Image.Image, photo: Image.Image) -> RemovalScore:
    analysis = analyze(image)
    kept_thing, found = removal.target.things[0], match(removal.target, analysis)[0]
    kept = (
        analysis.background == removal.source.background
        and found is not None
        and (found.shape, found.colour, found.size) == (kept_thing.shape, kept_thing.colour, kept_thing.size)
    )
    return RemovalScore(
        kept and len(analysis.things) == 1,
        kept,
        psnr(image, photo, ~region(removal)),
        psnr(image, render(removal.target).image),
    )


Way = Callable[[Any, rnri.Inversion, Removal], Image.Image]  # (pipe, inversion of the photo, removal) -> edited


def by_caption(**options: Any) -> Way:
    """Regenerate under the caption without the object (``options`` go to ``rnri.regenerate``)."""

    def way(pipe, inv: rnri.Inversion, removal: Removal) -> Image.Image:
        mask = Image.fromarray(region(removal).astype(np.uint8) * 255) if options.get("mask") == "painted" else None
        return rnri.regenerate(pipe, inv, removal.target.caption, **{**options, "mask": mask})

    return way


def by_direction(weight: float, control: AttentionControl | None = None) -> Way:
    """LEdits++'s removal: the source caption, away from the object's words by ``weight``."""

    def way(pipe, inv: rnri.Inversion, removal: Removal) -> Image.Image:
        words = removal.source.things[removal.index].words
        directions = Directions((Direction(words, -weight),))
        return rnri.regenerate(pipe, inv, removal.source.caption, directions=directions, control=control)

    return way


WAYS: dict[str, Way] = {
    "caption without it (plain)": by_caption(),
    "caption without it + attention control": by_caption(control=AttentionControl()),
    "caption without it, painted mask": by_caption(mask="painted"),
    "negative direction, weight 1": by_direction(1.0),
    "negative direction, weight 2": by_direction(2.0),
    "negative direction, weight 1 + attention control": by_direction(1.0, AttentionControl()),
}


def run(pipe, photos: int, seed: int) -> list[dict[str, Any]]:
    """Every way on every removal; per way, the means and the cost of one edit."""
    rows: dict[str, list] = {name: [] for name in WAYS}
    for removal in removals(seed, photos):
        photo = render(removal.source).image
        inv = rnri.invert(pipe, removal.source.caption, image=photo)
        for name, way in WAYS.items():
            start = time.perf_counter()
            with count_unet_calls(pipe.unet) as calls:
                image = way(pipe, inv, removal)
            rows[name].append((score(removal, image, photo), calls.items, time.perf_counter() - start))
    table = []
    for name, results in rows.items():
        scores = [s for s, _, _ in results]
        table.append(
            {
                "way": name,
                "success": float(np.mean([s.success for s in scores])),
                "kept": float(np.mean([s.kept for s in scores])),
                "background_psnr": float(np.mean([min(s.background_psnr, 60.0) for s in scores])),
                "target_psnr": float(np.mean([min(s.target_psnr, 60.0) for s in scores])),
                "forward_equivalents": float(np.mean([items for _, items, _ in results])),
                "edit_s": float(np.mean([seconds for _, _, seconds in results])),
            }
        )
    return table


def markdown(table: list[dict[str, Any]], photos: int) -> str:
    lines = [
        f"{photos} two-object photos, one object removed from each. Success: exactly the kept object on the same "
        "background; kept: the kept object and background unchanged; bg PSNR: outside the removed object.",
        "",
        "| way | success | kept | bg PSNR | target PSNR | fwd-eq / edit | s / edit |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in table:
        lines.append(
            f"| {r['way']} | **{r['success']:.2f}** | {r['kept']:.2f} | {r['background_psnr']:.1f} | "
            f"{r['target_psnr']:.1f} | {r['forward_equivalents']:.0f} | {r['edit_s']:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m rnri_lab.bench.removal", description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default="tiny", help="an LCM pipeline (Hub id or folder); tiny: the shapes LCM")
    parser.add_argument("--out", type=Path, default=Path("bench-out/removal.md"))
    args = parser.parse_args(argv)
    start = time.perf_counter()
    table = run(rnri.load_pipeline(args.model, device="cpu"), args.photos, args.seed)
    text = markdown(table, args.photos)
    text += f"\n\n`python -m rnri_lab.bench.removal --photos {args.photos} --seed {args.seed}`: "
    text += f"{time.perf_counter() - start:.0f} s."
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
