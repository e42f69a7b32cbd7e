"""Measured effect of masks on local edits: background PSNR outside the edit region, change inside it.

``python -m rnri.edit_testbeds`` prints the tables in docs/local-edits.md: on the tiny LCM pipeline (pixels, with
the example photos) and on the analytic testbeds (latents, where the true background is known exactly).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import rnri
from rnri.analytic import FAMILIES, GaussianMixtureUNet, MixtureConfig
from rnri.masks import BlendConfig, blended_sample

ASSETS = Path(__file__).resolve().parent.parent / "assets"
EDITS = {  # photo -> (source prompt, target prompt, painted box as fractions (left, top, right, bottom))
    "cat.jpg": ("a photo of a cat", "a photo of a tiger", (0.25, 0.1, 0.75, 0.9)),
    "coffee.jpg": ("a cup of coffee on a table", "a cup of tea on a table", (0.2, 0.15, 0.8, 0.85)),
}


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


def pipeline_table(model: str = "tiny") -> str:
    """Background PSNR (outside the painted box) and inside PSNR against the input, per mask mode."""
    pipe = rnri.load_pipeline(model)
    lines = ["| photo | mask | background PSNR (dB) | inside PSNR (dB) |", "|---|---|---|---|"]
    for name, (source, target, box) in EDITS.items():
        photo = Image.open(ASSETS / name).convert("RGB")
        inv = rnri.invert(pipe, source, image=photo)
        painted = box_mask(photo.size, box)
        outside = np.asarray(painted) == 0
        modes = {
            "none": {},
            "auto": {"mask": "auto"},
            "painted, paste-back": {"mask": painted},
            "painted, no paste-back": {"mask": painted, "blend": BlendConfig(paste_back=False)},
        }
        for label, kwargs in modes.items():
            edit = rnri.regenerate(pipe, inv, target, **kwargs)
            lines.append(
                f"| {name} | {label} | {region_psnr(edit, photo, outside):.2f} | "
                f"{region_psnr(edit, photo, ~outside):.2f} |"
            )
    return "\n".join(lines)


def prompt_eps(unet: GaussianMixtureUNet, embeds: torch.Tensor):
    """The analytic eps under one prompt embedding, as an ``EpsFn``."""
    return lambda z, t: unet(z, t, embeds, return_dict=False)[0]


def analytic_table(samples: int = 4) -> str:
    """Latent-space background error of masked vs unmasked edits on the analytic testbeds."""
    from diffusers import LCMScheduler

    from rnri.adapter import lcm_steps
    from rnri.chain import sample
    from rnri.inversion import invert_chain
    from rnri.solvers import make_config

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
            inv = invert_chain(
                prompt_eps(unet, source),
                steps,
                z0,
                noises,
                "rnri",
                make_config("rnri", {}),
            )

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
    print("Tiny LCM pipeline (random weights), example photos:\n")
    print(pipeline_table())
    print("\nAnalytic testbeds (latents; errors relative to the clean latent's norm in that region):\n")
    print(analytic_table())
