"""ShapeEdit: ``python -m rnri_lab.bench.shapes``: inversion and editing quality per method on the trained shapes LCM.

Source photos are renders of held-out scenes (they play the role of real photos); each is inverted once per
variant (method, options, noise correction, strength) under its caption, at the backbone's inversion guidance, and
edited at its edit guidance (``--inversion-guidance``, ``--guidance``) under every target caption of its edits
(colour, shape, size, background, one object of two), without a mask, with the painted region a user would draw
(``oracle``: where the ground truth changes, grown by 2 pixels) or with the automatic mask. Every edit is scored
against the exact ground truth by the attribute analyzer (``rnri_lab.shapes.score``). Writes ``shapes.json``,
``shapes.md`` and ``shapes.png`` (success against preservation and against cost).

Why one module of ~590 lines: the ShapeEdit bench is one pre-registered protocol (splits, methods, metrics,
paired intervals, tables), read as one.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import StableDiffusionPipeline
from tqdm import tqdm

import rnri
from rnri.core.counting import count_unet_calls
from rnri.core.directions import Direction, Directions
from rnri.pipelines.attention import AttentionControl, inject_keys_values, replace
from rnri.pipelines.backbones import guidance_defaults
from rnri.pipelines.images import psnr
from rnri.pipelines.loading import frozen_on
from rnri.shapes.models import TEACHER_DIR
from rnri.shapes.render import render
from rnri_lab.bench.ledits import ledits_invert, ledits_pipeline, ledits_words
from rnri_lab.shapes.edits import KINDS, Edit, shape_edit
from rnri_lab.shapes.evaluate import vae_roundtrip
from rnri_lab.shapes.score import region_mask, score_edit

BACKWARD_COST = 2.0  # forward-equivalents of a UNet backward pass (measured at real size: docs/results.md)


@dataclass(frozen=True)
class Variant:
    """One way of inverting and editing: a row of the table."""

    label: str
    method: str = "rnri"
    options: dict[str, Any] = field(default_factory=dict)  # the method's solver options
    noise_correction: bool | None = None  # None: rnri.invert's default (on where the chain injects noise)
    mask: str | None = None  # None, "oracle" (the region a user would paint) or "auto" (rnri.auto_mask)
    strength: float = 1.0  # fraction of the chain inverted and regenerated
    control: AttentionControl | None = None  # attention control of the edits and of the reconstruction
    directions: Callable[[Edit], Directions] | None = None  # the edit as directions from the source caption
    source: str | None = None  # the source prompt instead of the photo's caption ("": none, as LEdits++ allows)
    caption: Callable[[Any], str | None] | None = None  # reads the source prompt from the photo (--caption analyzer)
    negative: Callable[[Edit], str] | None = None  # each edit's negative prompt (--negative; CFG backbones)
    inversion_guidance: float | None = None  # of the inversion and the reconstruction; None: the run's


VARIANTS = [
    Variant("ddim", "ddim", noise_correction=False),
    Variant("ddim + noise correction", "ddim", noise_correction=True),
    Variant("fixed-point x2", "fixed-point", {"iterations": 2}, noise_correction=False),
    Variant("fixed-point x2 + noise correction", "fixed-point", {"iterations": 2}, noise_correction=True),
    Variant("rnri-jf x2 (official code)", "rnri-jf", {"iterations": 2}, noise_correction=False),
    Variant("rnri (old default: chain guess + noise correction)"),
    Variant("rnri, no noise correction", noise_correction=False),
    Variant("rnri, init ddim", options={"init": "ddim"}, noise_correction=False),
    Variant("rnri x2", options={"iterations": 2}, noise_correction=False),
    Variant("rnri, no prior", options={"prior_weight": 0.0}, noise_correction=False),
    Variant("rnri, autograd slope", options={"derivative": "autograd"}, noise_correction=False),
    Variant("rnri + noise correction", noise_correction=True),
    Variant("rnri + noise correction, painted mask", noise_correction=True, mask="oracle"),
    Variant("rnri, painted mask", mask="oracle", noise_correction=False),
    Variant("rnri, automatic mask", mask="auto", noise_correction=False),
    Variant("rnri, strength 0.75", strength=0.75, noise_correction=False),
    Variant("rnri, strength 0.5", strength=0.5, noise_correction=False),
    Variant("rnri (old default), strength 0.75", strength=0.75),
    Variant("rnri (old default), painted mask", mask="oracle"),
]
ROBUSTNESS = [  # the initial guess and the last step, with and without noise correction: --robustness
    Variant("ddim", "ddim", noise_correction=False),
    Variant("ddim + noise correction", "ddim", noise_correction=True),
    Variant("rnri (old default)"),
    Variant("rnri + noise correction", noise_correction=True),
    Variant("rnri, init prior", options={"init": "prior"}, noise_correction=False),
    Variant("rnri, init prior + noise correction", options={"init": "prior"}, noise_correction=True),
    Variant("rnri, init ddim", options={"init": "ddim"}, noise_correction=False),
    Variant("rnri, init chain", options={"init": "chain"}, noise_correction=False),
    Variant("rnri, init chain-ddim", options={"init": "chain-ddim"}, noise_correction=False),
    Variant("rnri, init chain + noise correction", options={"init": "chain"}, noise_correction=True),
    Variant("rnri, init chain-ddim + noise correction", options={"init": "chain-ddim"}, noise_correction=True),
    Variant("rnri x2 + noise correction", options={"iterations": 2}, noise_correction=True),
    Variant("rnri, last step x3 + noise correction", options={"final_iterations": 3}, noise_correction=True),
    Variant(
        "rnri, init chain-ddim, last step x3 + noise correction",
        options={"init": "chain-ddim", "final_iterations": 3},
        noise_correction=True,
    ),
]
TEACHER = [  # the DDIM-trained teacher at 50 steps (the paper's latent-diffusion setting): --model tiny-teacher
    Variant("ddim", "ddim"),
    Variant("fixed-point x2", "fixed-point", {"iterations": 2}),
    Variant("rnri-jf x2 (official code)", "rnri-jf", {"iterations": 2}),
    Variant("rnri (old default)"),
    Variant("rnri, painted mask", mask="oracle"),
]
EMPTY_SOURCE = [  # what describing the photo buys: --empty-source
    Variant("ddim", "ddim", noise_correction=False),
    Variant("ddim, no source prompt", "ddim", noise_correction=False, source=""),
    Variant("rnri (old default)"),
    Variant("rnri (old default), no source prompt", source=""),
    Variant("rnri (old default), painted mask", mask="oracle"),
    Variant("rnri (old default), painted mask, no source prompt", mask="oracle", source=""),
]
QUICK = [
    v
    for v in VARIANTS
    if v.label
    in (
        "ddim",
        "rnri (old default: chain guess + noise correction)",
        "rnri, no noise correction",
        "rnri (old default), painted mask",
    )
]


def phrases(edit: Edit) -> tuple[str, str]:
    """What an edit takes away and what it brings, in caption words: the object's, or the background's."""
    if edit.index is None:
        return f"{edit.source.background} background", f"{edit.target.background} background"
    return edit.source.things[edit.index].words, edit.target.things[edit.index].words


def ledits(weight: float) -> Callable[[Edit], Directions]:
    """LEdits++'s way to ask for an edit: towards the new words, away from the old ones, against the empty prompt."""

    def directions(edit: Edit) -> Directions:
        removed, added = phrases(edit)
        return Directions((Direction(added, weight), Direction(removed, -weight)))

    return directions


def caption_direction(edit: Edit) -> Directions:
    """The target caption as one direction against the source caption, inside its implicit mask."""
    return Directions((Direction(edit.target.caption),), reference=None)


def control_sweep() -> list[Variant]:
    """Attention control's settings, one change at a time around the defaults (choose them on another seed than
    the one reported): python -m rnri_lab.bench.shapes --sweep --seed 1."""
    base = AttentionControl()
    changes: list[dict[str, Any]] = [
        *({"self_fraction": f} for f in (0.0, 0.25, 0.75, 1.0)),
        *({"cross_fraction": f} for f in (0.0, 0.25, 0.5, 1.0)),
        {"inject": inject_keys_values},
        {"align": replace},
        {"local_blend": False},
        *({"blend_threshold": t} for t in (0.1, 0.2, 0.5, 0.7)),
        *({"blend_dilation": d} for d in (0, 2)),
        *({"blend_start": f} for f in (0.25, 0.5)),
    ]
    variants = [Variant("rnri (old default)"), Variant("control (defaults)", control=base)]
    for change in changes:
        label = ", ".join(f"{k}={getattr(v, '__name__', v)}" for k, v in change.items())
        variants.append(Variant(f"control, {label}", control=dataclasses.replace(base, **change)))
    return variants


CONTROL = [  # attention control against plain regeneration and masks: python -m rnri_lab.bench.shapes --control
    Variant("rnri (old default)"),
    Variant("rnri, painted mask", mask="oracle"),
    Variant("rnri, automatic mask", mask="auto"),
    Variant("rnri + attention control", control=AttentionControl()),
    Variant("rnri + attention control, no local blend", control=AttentionControl(local_blend=False)),
    Variant("rnri + attention control, keys and values", control=AttentionControl(inject=inject_keys_values)),
    Variant("rnri + attention control + painted mask", mask="oracle", control=AttentionControl()),
    Variant("rnri, caption direction in its implicit mask", directions=caption_direction),
    Variant("rnri, LEdits++ directions", directions=ledits(1.0)),
    Variant("rnri + attention control, LEdits++ directions", control=AttentionControl(), directions=ledits(1.0)),
]


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
    unet_calls: int = 0  # UNet calls of the edit (its regeneration; an automatic mask's calls included)
    forward_equivalents: int = 0  # the calls weighted by their batch
    edit_s: float = math.nan  # wall seconds of the edit, to latents and decoded
    photo: int = -1  # index of the photo in the benchmark, and of the noise seed: what pairs rows across variants
    noise_seed: int = 0


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
    photo: int = -1  # index of the photo in the benchmark
    noise_seed: int = 0  # the seed of the chain's fixed noises (rnri.invert's seed)
    fallback_steps: int = 0  # steps where the guard took DDIM's guess (Inversion.fallbacks)


def invert_and_edit(
    pipe,
    variant: Variant,
    photo,
    source: str,
    edits: list[Edit],
    guidance: float,
    inversion_guidance: float,
    noise_seed: int = 0,
):
    """Invert ``photo`` once at ``inversion_guidance`` (the variant's, if it has one) with the chain's noises drawn
    from ``noise_seed``, reconstruct it at the same guidance and make every edit at ``guidance``; returns the
    inversion, its time, the reconstruction and the edited images."""
    source = source if variant.source is None else variant.source
    if variant.caption is not None:
        source = variant.caption(photo) or ""  # nothing read: inverted unconditionally, as an empty field would be
    if variant.inversion_guidance is not None:
        inversion_guidance = variant.inversion_guidance
    start = time.perf_counter()
    inv = rnri.invert(
        pipe,
        source,
        image=photo,
        method=variant.method,
        guidance_scale=inversion_guidance,
        seed=noise_seed,
        noise_correction=variant.noise_correction,
        strength=variant.strength,
        **variant.options,
    )
    seconds = time.perf_counter() - start
    reconstruction = rnri.regenerate(pipe, inv, source, control=variant.control)
    edited = []
    for edit in edits:
        mask = {None: None, "oracle": region_mask(edit), "auto": "auto"}[variant.mask]
        options = {"mask": mask, "control": variant.control, "guidance_scale": guidance}
        if variant.negative is not None:
            options["negative_prompt"] = variant.negative(edit)
        if variant.directions is None:
            prompt = edit.target.caption
        else:
            prompt, options["directions"] = source, variant.directions(edit)
        start = time.perf_counter()
        with count_unet_calls(pipe.unet) as calls:
            image = rnri.regenerate(pipe, inv, prompt, **options)
        edited.append((image, calls.forwards, calls.items, time.perf_counter() - start))
    return inv, seconds, reconstruction, edited


def chosen_edits(groups: list[tuple[Any, list[Edit]]], per_photo: int | None) -> list[list[int]]:
    """Which of each photo's edits to make: all, or ``per_photo`` of them taken in turn (photo i starts at its
    edit i mod its count), so every kind keeps its share when only some are made."""
    if per_photo is None:
        return [list(range(len(edits))) for _, edits in groups]
    counts = [len(edits) for _, edits in groups]
    return [sorted({(i + j) % n for j in range(min(per_photo, n))}) for i, n in enumerate(counts)]


def run(
    pipe,
    variants: list[Variant],
    photos: int,
    seed: int,
    guidance: float,
    inversion_guidance: float | None = None,
    noise_seed: int = 0,
    edits_per_photo: int | None = None,
    bar: Any = None,
) -> tuple[list, list]:
    """Every variant on every photo of the benchmark (scene ``seed``), edits at ``guidance``, the inversion at
    ``inversion_guidance`` (None: ``guidance`` too) with the noises of ``noise_seed``; all of each photo's edits or
    ``edits_per_photo`` of them; progress on ``bar`` (a tqdm) or a bar of its own; (photo rows, edit rows)."""
    inversion_guidance = guidance if inversion_guidance is None else inversion_guidance
    groups = shape_edit(seed, photos)
    picks = chosen_edits(groups, edits_per_photo)
    sources = [render(source).image for source, _ in groups]
    ceilings = [psnr(photo, rebuilt) for photo, rebuilt in zip(sources, vae_roundtrip(pipe.vae, sources))]
    photo_rows, edit_rows = [], []
    own_bar = bar is None
    bar = tqdm(total=len(variants) * len(groups), desc="ShapeEdit") if own_bar else bar
    for variant in variants:
        for index, ((source, all_edits), ceiling, pick) in enumerate(zip(groups, ceilings, picks)):
            photo, edits = render(source).image, [all_edits[j] for j in pick]
            inv, seconds, reconstruction, edited = invert_and_edit(
                pipe, variant, photo, source.caption, edits, guidance, inversion_guidance, noise_seed
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
                    photo=index,
                    noise_seed=noise_seed,
                    fallback_steps=len(inv.fallbacks),
                )
            )
            for edit, (image, calls, items, edit_s) in zip(edits, edited):
                score = asdict(score_edit(edit, image, photo))
                edit_rows.append(
                    EditRow(
                        variant.label,
                        edit.kind,
                        **score,
                        unet_calls=calls,
                        forward_equivalents=items,
                        edit_s=edit_s,
                        photo=index,
                        noise_seed=noise_seed,
                    )
                )
            bar.update()
    if own_bar:
        bar.close()
    return photo_rows, edit_rows


LEDITS = "LEdits++ (diffusers, DDIM-trained teacher; fwd-eq)"  # the peer's row; its costs count batch items


def run_ledits(teacher, photos: int, seed: int) -> tuple[list, list]:
    """LEdits++ (``rnri_lab.bench.ledits``) on every photo and edit of the benchmark; (photo rows, edit rows). Its
    photo rows have no reconstruction (LEdits++ has no separate one) and count forward-equivalents as forwards."""
    pipe = ledits_pipeline(teacher)
    photo_rows, edit_rows = [], []
    for source, edits in tqdm(shape_edit(seed, photos), desc="LEdits++"):
        photo = render(source).image
        cost = ledits_invert(pipe, photo, source.caption)
        photo_rows.append(
            PhotoRow(LEDITS, math.nan, math.nan, math.nan, math.nan, cost.forward_equivalents, 0, cost.seconds)
        )
        for edit in edits:
            image, cost = ledits_words(pipe, *phrases(edit))
            score = asdict(score_edit(edit, image, photo))
            edit_rows.append(
                EditRow(
                    LEDITS,
                    edit.kind,
                    **score,
                    unet_calls=cost.unet_calls,
                    forward_equivalents=cost.forward_equivalents,
                    edit_s=cost.seconds,
                )
            )
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
                "edit_calls": float(np.mean([r.unet_calls for r in edits])),
                "edit_forward_equivalents": float(np.mean([r.forward_equivalents for r in edits])),
                "edit_s": float(np.mean([r.edit_s for r in edits])),
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
        " z_T std | fwd+bwd | fwd-eq | s / inversion | edit calls / fwd-eq | s / edit |",
        "|---|" + "---|" * (len(KINDS) + 13),
    ]
    for r in table:
        kinds = " | ".join(f"{r['success ' + k]:.2f}" for k in KINDS)
        lines.append(
            f"| {r['variant']} | **{r['success']:.2f}** | {kinds} | {r['preservation']:.3f} | {r['object_iou']:.2f} | "
            f"{r['background_psnr']:.1f} | {r['target_psnr']:.1f} | {r['reconstruction_psnr']:.1f} | "
            f"{r['zT_std']:.2f} | {r['forwards']:.0f}+{r['backwards']:.0f} | {r['forward_equivalents']:.0f} | "
            f"{r['invert_s']:.2f} | {r['edit_calls']:.0f} / {r['edit_forward_equivalents']:.0f} | {r['edit_s']:.2f} |"
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


def source_attribute(edit: Edit) -> str:
    """The words of the source caption the edit changes: a colour, shape or size ("red"), or "gray background"."""
    if edit.index is None:
        return f"{edit.source.background} background"
    return getattr(edit.source.things[edit.index], edit.attribute)


def twins(caption: bool, negative: bool) -> list[Variant]:
    """The default row, then its twin with the analyzer's caption as the source prompt and/or its twin with a
    negative prompt naming the source attribute: each twin is paired with the first row, edit by edit."""
    from rnri.shapes.analyze import described

    base = Variant("rnri (old default)")
    found = [base]
    if caption:
        found.append(dataclasses.replace(base, label="rnri (old default), analyzer's caption", caption=described))
    if negative:
        found.append(dataclasses.replace(base, label="rnri (old default), negative prompt", negative=source_attribute))
    return found


def paired_markdown(variants: list[Variant], edit_rows: list[EditRow], groups: list) -> str:
    """Each row after the first against the first, edit by edit: mean difference [95% interval, photos resampled]."""
    from rnri_lab.bench.paired_edits import paired_bootstrap

    photos = np.array([i for i, (_, edits) in enumerate(groups) for _ in edits])
    metrics = ("success", "preservation", "background_psnr", "target_psnr")
    lines = ["Paired with the first row over the same edits: mean difference [95% bootstrap interval, photos "
             "resampled] (edits better, worse); PSNRs capped at 60 dB as in the table.", "",
             "| row | " + " | ".join(metrics) + " |", "|---|" + "---|" * len(metrics)]  # fmt: skip
    base = [r for r in edit_rows if r.variant == variants[0].label]
    for variant in variants[1:]:
        rows = [r for r in edit_rows if r.variant == variant.label]
        cells = []
        for metric in metrics:
            a, b = (np.minimum([float(getattr(r, metric)) for r in side], 60.0) for side in (base, rows))
            kept = np.isfinite(a) & np.isfinite(b)  # a background edit has no background PSNR
            cells.append(str(paired_bootstrap(a[kept], b[kept], photos[kept])))
        lines.append(f"| {variant.label} | " + " | ".join(cells) + " |")
    readers = [v for v in variants if v.caption is not None]
    for variant in readers:
        same = sum(variant.caption(render(scene).image) == scene.caption for scene, _ in groups)
        lines += ["", f"{variant.label}: the caption read equals the scene's true caption on {same} of {len(groups)} "
                  "photos."]  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m rnri_lab.bench.shapes", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="6 photos, 4 variants (under a minute)")
    parser.add_argument("--control", action="store_true", help="attention control against plain edits and masks")
    parser.add_argument("--sweep", action="store_true", help="attention control's settings, one at a time")
    parser.add_argument("--robustness", action="store_true", help="initial guesses, last-step iterations")
    parser.add_argument("--empty-source", action="store_true", help="with and without the source prompt")
    parser.add_argument("--ledits", action="store_true", help="add LEdits++ (diffusers) on the shapes DDIM teacher")
    parser.add_argument(
        "--caption",
        choices=("truth", "analyzer"),
        default="truth",
        help="analyzer: the default row beside its twin whose source prompt the analyzer reads from the photo (the "
        "editor's suggested caption), paired with bootstrap intervals",
    )
    parser.add_argument(
        "--negative",
        action="store_true",
        help="the default row beside its twin with a negative prompt naming the attribute each edit changes, "
        "paired with bootstrap intervals (classifier-free-guidance backbones)",
    )
    parser.add_argument("--photos", type=int, default=48)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--model",
        default="tiny",
        help="a pipeline (Hub id or folder); tiny: the shapes LCM; tiny-teacher: its DDIM teacher (own variants)",
    )
    parser.add_argument(
        "--guidance", type=float, help=f"of the edits (default: the backbone's: {guidance_defaults(edit=True)})"
    )
    parser.add_argument(
        "--inversion-guidance",
        type=float,
        help=f"of the inversion and the reconstruction (default: the backbone's: {guidance_defaults()})",
    )
    parser.add_argument("--out", type=Path, default=Path("bench-out/shapes"))
    args = parser.parse_args(argv)
    variants, photos = (QUICK, 6) if args.quick else (VARIANTS, args.photos)
    if args.control or args.sweep:
        variants = CONTROL if args.control else control_sweep()
    if args.robustness:
        variants = ROBUSTNESS
    if args.empty_source:
        variants = EMPTY_SOURCE
    pipe = rnri.load_pipeline(args.model, device="cpu")
    if rnri.backbone_of(pipe).name == "stable-diffusion" and not (args.control or args.sweep):
        variants = TEACHER if not args.quick else TEACHER[:2]
    if args.caption == "analyzer" or args.negative:
        variants = twins(args.caption == "analyzer", args.negative)
    guidance = rnri.default_guidance(pipe, edit=True) if args.guidance is None else args.guidance
    inversion_guidance = rnri.default_guidance(pipe) if args.inversion_guidance is None else args.inversion_guidance
    start = time.perf_counter()
    photo_rows, edit_rows = run(pipe, variants, photos, args.seed, guidance, inversion_guidance)
    if args.ledits:
        teacher = frozen_on(
            StableDiffusionPipeline.from_pretrained(TEACHER_DIR, use_safetensors=True), "cpu", torch.float32
        )
        peer_photos, peer_edits = run_ledits(teacher, photos, args.seed)
        variants, photo_rows, edit_rows = (
            [*variants, Variant(LEDITS)],
            photo_rows + peer_photos,
            edit_rows + peer_edits,
        )
    table = summary(variants, photo_rows, edit_rows)
    args.out.mkdir(parents=True, exist_ok=True)
    edits_per_variant = len(edit_rows) // len(variants)
    text = markdown(table, edits_per_variant, photos)
    elapsed = time.perf_counter() - start
    command = " ".join(["python -m rnri_lab.bench.shapes", *(sys.argv[1:] if argv is None else argv)])
    text += f"\n\n`{command}`: {elapsed:.0f} s, inversion at guidance {inversion_guidance:g}, edits at {guidance:g}."
    if len(variants) > 1 and (variants[1].caption or variants[1].negative):
        text += "\n\n" + paired_markdown(variants, edit_rows, shape_edit(args.seed, photos))
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
