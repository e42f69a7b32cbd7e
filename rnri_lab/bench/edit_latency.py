"""``python -m rnri_lab.bench.edit_latency``: what a user waits for, on a pipeline of the real model's size.

Builds an LCM pipeline with the architectures of ``SimianLuo/LCM_Dreamshaper_v7`` (its UNet, Stable Diffusion
1.5's VAE, CLIP ViT-L/14's text encoder) and seeded random weights (cost does not depend on the values), then
times, at 512x512 and batch 1: the inversion with each slope, the regeneration, a whole first edit (invert,
reconstruct, edit, each decoded) and a re-edit from a cached inversion. Median of ``--repeats`` after one
warm-up. ``--size tiny`` runs the same on the tiny pipeline (what the tests do).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from diffusers import LatentConsistencyModelPipeline
from PIL import Image

import rnri
from rnri.pipelines.gpu import FastPath, apply_fast_path
from rnri.pipelines.loading import frozen_on, random_pipeline, tiny_pipeline
from rnri_lab.bench.realsize import LCM_DREAMSHAPER_V7_UNET
from rnri_lab.bench.timing import measured

SD15_VAE: dict[str, Any] = {  # Stable Diffusion 1.5's autoencoder, as LCM_Dreamshaper_v7 ships it
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 4,
    "block_out_channels": (128, 256, 512, 512),
    "layers_per_block": 2,
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "norm_num_groups": 32,
    "sample_size": 512,
    "scaling_factor": 0.18215,
}
CLIP_VIT_L_TEXT = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12}
SOURCE, TARGET = "a photo of a cat", "a photo of a tiger"


def real_size_pipeline(seed: int = 0) -> LatentConsistencyModelPipeline:
    """The real model's architecture with seeded random weights; the tiny byte-level tokenizer (no download)."""
    return random_pipeline(LCM_DREAMSHAPER_V7_UNET, SD15_VAE, CLIP_VIT_L_TEXT, seed)


def timed(work: Callable[[], Any], device: str, repeats: int) -> dict[str, float]:
    """Median wall seconds of ``repeats`` runs after one warm-up, and the largest peak memory growth (MiB)."""
    usage = measured(work, device, repeats)
    return {"seconds": usage.wall_s, "peak_mib": usage.peak_mib}


def run(
    size: str = "real",
    device: str = "cpu",
    dtype: str | None = None,
    repeats: int = 5,
    compile_mode: str | None = None,
) -> dict[str, Any]:
    """Time each piece of an edit; a JSON-ready dict. ``compile_mode``: ``torch.compile`` the UNet first
    (``"default"`` or a mode such as ``"reduce-overhead"``), through ``rnri.pipelines.gpu.apply_fast_path``."""
    torch_dtype = getattr(torch, dtype) if dtype else (torch.float16 if device.startswith("cuda") else torch.float32)
    pipe = frozen_on(real_size_pipeline() if size == "real" else tiny_pipeline(), device, torch_dtype)
    warm_up = None
    if compile_mode:
        mode = None if compile_mode == "default" else compile_mode
        warm_up = apply_fast_path(pipe, FastPath(compile=True, compile_mode=mode)).warmup_seconds
    side = pipe.unet.config.sample_size * pipe.vae_scale_factor
    rng = np.random.default_rng(0)
    photo = Image.fromarray((rng.random((side, side, 3)) * 255).astype(np.uint8))
    inv = rnri.invert(pipe, SOURCE, image=photo)

    def first_edit() -> None:  # what the editor does for a new photo: invert, reconstruct, edit
        fresh = rnri.invert(pipe, SOURCE, image=photo)
        rnri.regenerate(pipe, fresh, SOURCE)
        rnri.regenerate(pipe, fresh, TARGET)

    work = {
        "invert (the default: ddim + noise correction)": lambda: rnri.invert(pipe, SOURCE, image=photo),
        "invert (rnri: slope by a forward difference)": lambda: rnri.invert(pipe, SOURCE, image=photo, method="rnri"),
        "invert (rnri, slope by autograd)": lambda: rnri.invert(
            pipe, SOURCE, image=photo, method="rnri", derivative="autograd"
        ),
        "regenerate to latents (4 steps)": lambda: rnri.regenerate(pipe, inv, TARGET, output_type="latent"),
        "re-edit from a cached inversion (regenerate + decode)": lambda: rnri.regenerate(pipe, inv, TARGET),
        "first edit (invert + reconstruct + edit, decoded)": first_edit,
    }
    rows = {name: timed(fn, device, repeats) for name, fn in work.items()}
    name = torch.cuda.get_device_name(device) if device.startswith("cuda") else "CPU"
    described = f"{name} ({str(torch_dtype).removeprefix('torch.')})"
    if compile_mode:
        described += f", UNet compiled (mode {compile_mode}; warm-up {warm_up:.0f} s)"
    return {"device": described, "size": f"{side}x{side}", "rows": rows}


def table(result: dict[str, Any]) -> str:
    lines = [f"{result['device']}, {result['size']}, batch 1; median of the repeats after a warm-up.", ""]
    lines += ["| work | seconds | peak MiB above the weights |", "|---|---|---|"]
    lines += [f"| {k} | {v['seconds']:.3f} | {v['peak_mib']:.0f} |" for k, v in result["rows"].items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m rnri_lab.bench.edit_latency", description=__doc__.splitlines()[0])
    p.add_argument("--size", choices=("real", "tiny"), default="real")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), help="default: fp16 on CUDA, else fp32")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--compile", metavar="MODE", help="torch.compile the UNet first: 'default' or a mode name")
    p.add_argument("--json", help="also write the result here")
    args = p.parse_args(argv)
    result = run(args.size, args.device, args.dtype, args.repeats, args.compile)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    print(table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
