"""ShapeEdit: ``python -m rnri.bench.shapes``: inversion and editing quality per method on the trained shapes LCM.

Source photos are renders of held-out scenes (they play the role of real photos); each is inverted once per
variant (method, options, noise correction, strength) under its caption and edited under every target caption of
its edits (colour, shape, size, background, one object of two), without a mask, with the painted region a user
would draw (``oracle``: where the ground truth changes, grown by 2 pixels) or with the automatic mask. Every
edit is scored against the exact ground truth by the attribute analyzer (``rnri.shapes.score``). Writes
``shapes.json``, ``shapes.md`` and ``shapes.png`` (success against preservation and against cost).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

import rnri
from rnri.api import DEFAULT_GUIDANCE
from rnri.images import psnr
from rnri.shapes.edits import KINDS, Edit, shape_edit
from rnri.shapes.evaluate import vae_roundtrip
from rnri.shapes.render import render
from rnri.shapes.score import region_mask, score_edit

BACKWARD_COST = 2.0  # forward-equivalents of a UNet backward pass (measured at real size: docs/results.md)


@dataclass(frozen=True)
class Variant:
    """One way of inverting and editing: a row of the table."""

    label: str
    method: str = "rnri"
    options: dict[str, Any] = field(default_factory=dict)  # the method's solver options
    noise_correction: bool = False
    mask: str | None = None  # None, "oracle" (the region a user would paint) or "auto" (rnri.auto_mask)
    strength: float = 1.0  # fraction of the chain inverted and regenerated


VARIANTS = [
    Variant("ddim", "ddim"),
    Variant("ddim + noise correction", "ddim", noise_correction=True),
    Variant("fixed-point x2", "fixed-point", {"iterations": 2}),
    Variant("fixed-point x2 + noise correction", "fixed-point", {"iterations": 2}, noise_correction=True),
    Variant("rnri-jf x2 (official code)", "rnri-jf", {"iterations": 2}),
    Variant("rnri (default)"),
    Variant("rnri, init ddim", options={"init": "ddim"}),
    Variant("rnri x2", options={"iterations": 2}),
    Variant("rnri, no prior", options={"prior_weight": 0.0}),
    Variant("rnri, autograd slope", options={"derivative": "autograd"}),
    Variant("rnri + noise correction", noise_correction=True),
    Variant("rnri + noise correction, painted mask", noise_correction=True, mask="oracle"),
    Variant("rnri, painted mask", mask="oracle"),
    Variant("rnri, automatic mask", mask="auto"),
    Variant("rnri, strength 0.75", strength=0.75),
    Variant("rnri, strength 0.5", strength=0.5),
]
QUICK = [v for v in VARIANTS if v.label in ("ddim", "rnri (default)", "rnri + noise correction", "rnri, painted mask")]


@dataclass(frozen=True)
class EditRow:
    """One edit by one variant."""

    variant: str
    kind: str
    success: bool
    preservation: float
    object_iou: float
    background_psnr: float
    target_psnr: float


@dataclass(frozen=True)
class PhotoRow:
    """One inversion by one variant."""

    variant: str
    reconstruction_psnr: float  # dB, regenerated under the source caption vs the photo
    ceiling_psnr: float  # dB, the VAE's own encode-decode of the photo
    zT_std: float
    zT_nll: float  # per element under N(0, I), constant dropped (0.5 is typical)
    forwards: int
    backwards: int
    invert_s: float


def invert_and_edit(pipe, variant: Variant, photo, source: str, edits: list[Edit], guidance: float):
    """Invert ``photo`` once, reconstruct it and make every edit; returns the inversion, its time, the
    reconstruction and the edited images."""
    start = time.perf_counter()
    inv = rnri.invert(
        pipe,
        source,
        image=photo,
        method=variant.method,
        guidance_scale=guidance,
        noise_correction=variant.noise_correction,
        strength=variant.strength,
        **variant.options,
    )
    seconds = time.perf_counter() - start
    reconstruction = rnri.regenerate(pipe, inv, source)
    edited = []
    for edit in edits:
        mask = {None: None, "oracle": region_mask(edit), "auto": "auto"}[variant.mask]
        edited.append(rnri.regenerate(pipe, inv, edit.target.caption, mask=mask))
    return inv, seconds, reconstruction, edited


def run(pipe, variants: list[Variant], photos: int, seed: int, guidance: float) -> tuple[list, list]:
    """Every variant on every photo of the benchmark; (photo rows, edit rows)."""
    groups = shape_edit(seed, photos)
    sources = [render(source).image for source, _ in groups]
    ceilings = [psnr(photo, rebuilt) for photo, rebuilt in zip(sources, vae_roundtrip(pipe.vae, sources))]
    photo_rows, edit_rows = [], []
    bar = tqdm(total=len(variants) * len(groups), desc="ShapeEdit")
    for variant in variants:
        for (source, edits), ceiling in zip(groups, ceilings):
            photo = render(source).image
            inv, seconds, reconstruction, edited = invert_and_edit(
                pipe, variant, photo, source.caption, edits, guidance
            )
            z_T = inv.latents
            photo_rows.append(
                PhotoRow(
                    variant.label,
                    psnr(reconstruction, photo),
                    ceiling,
                    z_T.std().item(),
                    0.5 * z_T.pow(2).mean().item(),
                    inv.unet_forwards,
                    inv.unet_backwards,
                    seconds,
                )
            )
            for edit, image in zip(edits, edited):
                edit_rows.append(EditRow(variant.label, edit.kind, **asdict(score_edit(edit, image, photo))))
            bar.update()
    bar.close()
    return photo_rows, edit_rows


def finite_mean(values: list[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    kept = [min(v, 60.0) for v in kept]  # an identical region (inf dB) counts as 60 dB
    return float(np.mean(kept)) if kept else math.nan


def summary(variants: list[Variant], photo_rows: list[PhotoRow], edit_rows: list[EditRow]) -> list[dict[str, Any]]:
    """Per variant: means over photos and edits, success per kind, cost."""
    table = []
    for variant in variants:
        photos = [r for r in photo_rows if r.variant == variant.label]
        edits = [r for r in edit_rows if r.variant == variant.label]
        forwards, backwards = np.mean([r.forwards for r in photos]), np.mean([r.backwards for r in photos])
        table.append(
            {
                "variant": variant.label,
                "success": float(np.mean([r.success for r in edits])),
                **{
                    f"success {k}": float(np.mean([r.success for r in edits if r.kind == k] or [math.nan]))
                    for k in KINDS
                },
                "preservation": float(np.mean([r.preservation for r in edits])),
                "object_iou": float(np.mean([r.object_iou for r in edits])),
                "background_psnr": finite_mean([r.background_psnr for r in edits]),
                "target_psnr": finite_mean([r.target_psnr for r in edits]),
                "reconstruction_psnr": finite_mean([r.reconstruction_psnr for r in photos]),
                "ceiling_psnr": finite_mean([r.ceiling_psnr for r in photos]),
                "zT_std": float(np.mean([r.zT_std for r in photos])),
                "zT_nll": float(np.mean([r.zT_nll for r in photos])),
                "forwards": float(forwards),
                "backwards": float(backwards),
                "forward_equivalents": float(forwards + BACKWARD_COST * backwards),
                "invert_s": float(np.mean([r.invert_s for r in photos])),
            }
        )
    return table


def markdown(table: list[dict[str, Any]], edits: int, photos: int) -> str:
    lines = [
        f"{photos} photos, {edits} edits per variant. Success: the analyzer finds the asked-for change; "
        "preservation: share of the attributes not named by the edit found unchanged; IoU: the edited object's mask "
        "against the truth; bg PSNR: outside the edited region, against the photo; target PSNR: against the ideal "
        "edit's render; recon PSNR: the photo regenerated under its own caption (the VAE's ceiling in the note).",
        "",
        "| variant | success | " + " | ".join(KINDS) + " | preservation | IoU | bg PSNR | target PSNR | recon PSNR |"
        " z_T std | fwd+bwd | fwd-eq | s / inversion |",
        "|---|" + "---|" * (len(KINDS) + 11),
    ]
    for r in table:
        kinds = " | ".join(f"{r['success ' + k]:.2f}" for k in KINDS)
        lines.append(
            f"| {r['variant']} | **{r['success']:.2f}** | {kinds} | {r['preservation']:.3f} | {r['object_iou']:.2f} | "
            f"{r['background_psnr']:.1f} | {r['target_psnr']:.1f} | {r['reconstruction_psnr']:.1f} | "
            f"{r['zT_std']:.2f} | {r['forwards']:.0f}+{r['backwards']:.0f} | {r['forward_equivalents']:.0f} | "
            f"{r['invert_s']:.2f} |"
        )
    ceiling = table[0]["ceiling_psnr"] if table else math.nan
    lines += ["", f"VAE ceiling (encode-decode of the same photos): {ceiling:.1f} dB."]
    return "\n".join(lines)


def plot(table: list[dict[str, Any]], path: Path) -> None:
    """Success against preservation, and success against cost, one point per variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 5))
    for r in table:
        for ax, x in zip(axes, ("preservation", "forward_equivalents")):
            ax.scatter(r[x], r["success"], s=30)
            ax.annotate(r["variant"], (r[x], r["success"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    axes[0].set(xlabel="preservation (attributes not named, kept)", ylabel="edit success", title="ShapeEdit")
    axes[1].set(xlabel="UNet forward-equivalents per inversion", ylabel="edit success", title="success per cost")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m rnri.bench.shapes", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="6 photos, 4 variants (under a minute)")
    parser.add_argument("--photos", type=int, default=48)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default="tiny", help="an LCM pipeline (Hub id or folder); tiny: the shapes LCM")
    parser.add_argument("--guidance", type=float, default=DEFAULT_GUIDANCE)
    parser.add_argument("--out", type=Path, default=Path("bench-out/shapes"))
    args = parser.parse_args(argv)
    variants, photos = (QUICK, 6) if args.quick else (VARIANTS, args.photos)
    pipe = rnri.load_pipeline(args.model, device="cpu")
    guidance = args.guidance
    start = time.perf_counter()
    photo_rows, edit_rows = run(pipe, variants, photos, args.seed, guidance)
    table = summary(variants, photo_rows, edit_rows)
    args.out.mkdir(parents=True, exist_ok=True)
    edits_per_variant = len(edit_rows) // len(variants)
    text = markdown(table, edits_per_variant, photos)
    elapsed = time.perf_counter() - start
    command = " ".join(["python -m rnri.bench.shapes", *(sys.argv[1:] if argv is None else argv)])
    text += f"\n\n`{command}`: {elapsed:.0f} s, guidance {guidance}."
    (args.out / "shapes.md").write_text(text + "\n")
    (args.out / "shapes.json").write_text(
        json.dumps(
            {"table": table, "photos": [asdict(r) for r in photo_rows], "edits": [asdict(r) for r in edit_rows]}
        )
    )
    plot(table, args.out / "shapes.png")
    print(text)


if __name__ == "__main__":
    main()
