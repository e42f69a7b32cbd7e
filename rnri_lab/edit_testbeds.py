"""What the editor's numbers mean on the tiny model: masks on local edits, and reconstruction in and out of its world.

``python -m rnri_lab.edit_testbeds`` prints the tables of docs/local-edits.md and docs/app.md, and the tests compare
those pages with the functions below (``tests/test_docs.py``), so the pages cannot drift from the code:

- local edits on the tiny shapes LCM (pixels, default settings): background PSNR outside a painted box and PSNR inside
  it, against the photo, per mask (none, automatic, painted with and without paste-back), on a photo of its own world
  and on one it was never shown;
- reconstruction PSNR of the default inversion on held-out photos of its world (ShapeEdit's) and on the example photos
  of the real world, which the summary's words are set by (``rnri.editor.report``);
- masks on the analytic testbeds (latents, where the true background is known exactly).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import rnri
from rnri.core.masks import BlendConfig, blended_sample
from rnri.pipelines.images import mask_tensor, psnr
from rnri_lab.analytic import FAMILIES, GaussianMixtureUNet, MixtureConfig

ASSETS = Path(__file__).resolve().parent.parent / "assets"
EDITS = {  # photo -> (source prompt, target prompt, painted box as fractions (left, top, right, bottom))
    "shapes-red-circle.png": (
        "a large red circle on a blue background",
        "a large pink heart on a blue background",
        (0.2, 0.2, 0.8, 0.8),
    ),
    "cat.jpg": ("a photo of a cat", "a photo of a tiger", (0.25, 0.1, 0.75, 0.9)),
}
OFF_WORLD = {  # the editor's examples of real photos, under their source prompts (app.py)
    "cat.jpg": "a photo of a cat",
    "astronaut.jpg": "a photo of an astronaut",
    "coffee.jpg": "a cup of coffee on a table",
    "rocket.jpg": "a rocket launching",
}
WORLD_SEED, WORLD_PHOTOS = 1, 6  # held-out shapes photos: ShapeEdit's benchmark of this seed (rnri_lab.shapes.edits)


@dataclass(frozen=True)
class MaskRow:
    """One local edit: how far the photo is kept outside the painted box and changed inside it."""

    photo: str
    mask: str  # none, auto, painted with or without paste-back
    coverage: float  # fraction of the photo the mask covers (before dilation and feather); 1 without a mask
    background_psnr: float  # dB outside the painted box (inf: identical)
    inside_psnr: float  # dB inside it


def box_mask(size: tuple[int, int], box: tuple[float, float, float, float]) -> Image.Image:
    """A white rectangle (fractions of the image) on black, the size of the image."""
    mask = Image.new("L", size, 0)
    w, h = size
    mask.paste(255, (int(box[0] * w), int(box[1] * h), int(box[2] * w), int(box[3] * h)))
    return mask


def region_psnr(a: Image.Image, b: Image.Image, region: np.ndarray) -> float:
    """PSNR between two images over the pixels where ``region`` (H, W) is True, in dB."""
    x, y = (np.asarray(im.convert("RGB"), dtype=np.float64)[region] for im in (a, b))
    mse = float(np.mean((x - y) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def mask_rows(model: str = "tiny") -> list[MaskRow]:
    """Every photo of ``EDITS`` inverted once and edited with each mask."""
    pipe = rnri.load_pipeline(model)
    rows = []
    for name, (source, target, box) in EDITS.items():
        photo = Image.open(ASSETS / name).convert("RGB")
        inv = rnri.invert(pipe, source, image=photo)
        painted = box_mask(photo.size, box)
        outside = np.asarray(painted) == 0
        auto = rnri.auto_mask(pipe, inv, target)
        masks = {
            "none": ({}, 1.0),
            "auto": ({"mask": auto}, float(mask_tensor(auto).mean())),
            "painted, paste-back": ({"mask": painted}, float((~outside).mean())),
            "painted, no paste-back": ({"mask": painted, "blend": BlendConfig(paste_back=False)}, 1 - outside.mean()),
        }
        for label, (kwargs, coverage) in masks.items():
            edit = rnri.regenerate(pipe, inv, target, **kwargs)
            kept, changed = region_psnr(edit, photo, outside), region_psnr(edit, photo, ~outside)
            rows.append(MaskRow(name, label, float(coverage), kept, changed))
    return rows


def mask_table(rows: list[MaskRow]) -> str:
    lines = ["| photo | mask | mask covers | background PSNR (dB) | inside PSNR (dB) |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.photo} | {r.mask} | {r.coverage:.0%} | {r.background_psnr:.2f} | {r.inside_psnr:.2f} |")
    return "\n".join(lines)


def reconstruction_rows(model: str = "tiny") -> dict[str, list[float]]:
    """Reconstruction PSNR (dB) of the default inversion, as the editor computes it: on ``WORLD_PHOTOS`` held-out
    photos of the shapes world under their captions (``"shapes"``), and on each ``OFF_WORLD`` photo under its source
    prompt (by file name)."""
    from rnri.shapes.render import render
    from rnri.shapes.world import caption
    from rnri_lab.shapes.edits import shape_edit

    pipe = rnri.load_pipeline(model)

    def rebuilt(photo: Image.Image, prompt: str) -> float:
        return psnr(photo, rnri.regenerate(pipe, rnri.invert(pipe, prompt, image=photo), prompt))

    world = [rebuilt(render(scene).image, caption(scene)) for scene, _ in shape_edit(WORLD_SEED, WORLD_PHOTOS)]
    photos = {name: rebuilt(Image.open(ASSETS / name).convert("RGB"), prompt) for name, prompt in OFF_WORLD.items()}
    return {"shapes": world} | {name: [value] for name, value in photos.items()}


def reconstruction_table(rows: dict[str, list[float]]) -> str:
    world = rows["shapes"]
    lines = [
        "| photos | reconstruction PSNR (dB) |",
        "|---|---|",
        f"| {len(world)} held-out shapes photos (ShapeEdit, seed {WORLD_SEED}) | {min(world):.2f} to "
        f"{max(world):.2f}, median {float(np.median(world)):.2f} |",
    ]
    lines += [f"| {name} | {values[0]:.2f} |" for name, values in rows.items() if name != "shapes"]
    return "\n".join(lines)


def prompt_eps(unet: GaussianMixtureUNet, embeds: torch.Tensor):
    """The analytic eps under one prompt embedding, as an ``EpsFn``."""
    return lambda z, t: unet(z, t, embeds, return_dict=False)[0]


def analytic_table(samples: int = 4) -> str:
    """Latent-space background error of masked vs unmasked edits on the analytic testbeds."""
    from diffusers import LCMScheduler

    from rnri.core.chain import sample
    from rnri.core.inversion import invert_chain
    from rnri.core.solvers import make_config
    from rnri.pipelines.adapter import lcm_steps

    steps = lcm_steps(LCMScheduler(), 4)
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., 2:6, 2:6] = 1.0
    lines = ["| family | mask | background error | inside change |", "|---|---|---|---|"]
    for family in FAMILIES:
        unet = GaussianMixtureUNet(MixtureConfig(family=family))
        source, target = torch.full((1, 3, 32), 0.5), torch.full((1, 3, 32), -0.5)
        rows = {"none": [], "painted": []}
        for s in range(samples):
            g = torch.Generator().manual_seed(s)
            z0 = unet.sample_data(1, g, source)
            noises = [torch.randn(z0.shape, generator=g) for _ in steps[:-1]] + [None]
            eps_target = prompt_eps(unet, target)
            inv = invert_chain(prompt_eps(unet, source), steps, z0, noises, "rnri", make_config("rnri", {}))
            with torch.no_grad():
                plain = sample(eps_target, steps, inv.trajectory[0], inv.noises)[-1]
                blended = blended_sample(eps_target, steps, inv.trajectory, inv.noises, mask)[-1]
            for label, out in (("none", plain), ("painted", blended)):
                rel = ((out - z0) * (1 - mask)).norm() / (z0 * (1 - mask)).norm()
                inside = ((out - z0) * mask).norm() / (z0 * mask).norm()
                rows[label].append((rel.item(), inside.item()))
        for label, values in rows.items():
            bg, inside = np.mean(values, axis=0)
            lines.append(f"| {family} | {label} | {bg:.4f} | {inside:.4f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print("Local edits on the tiny shapes model (trained; default settings):\n")
    print(mask_table(mask_rows()))
    print("\nReconstruction on the tiny shapes model, in its world and out of it (default inversion):\n")
    print(reconstruction_table(reconstruction_rows()))
    print("\nAnalytic testbeds (latents; errors relative to the clean latent's norm in that region):\n")
    print(analytic_table())
