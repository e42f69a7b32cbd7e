"""How good the shapes instrument is: ``python -m rnri_lab.shapes.evaluate``.

- the analyzer's accuracy on renders and on the VAE's reconstructions of renders (it must be right to measure);
- the VAE's reconstruction PSNR (the ceiling of every inversion);
- how often the student's 4-step samples and the teacher's 50-step DDIM samples show what their caption says, on
  held-out captions (a (colour, shape) pair never seen in training) and, for comparison, on training captions.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from rnri.pipelines.images import psnr
from rnri.shapes import models
from rnri.shapes.analyze import Analysis, analyze, match
from rnri.shapes.render import render
from rnri.shapes.world import Scene, scenes

ATTRIBUTES = ("shape", "colour", "size")
Sampler = Callable[[list[str], int], list[Image.Image]]  # (captions, seed) -> images


@dataclass(frozen=True)
class Score:
    """Fractions of pictures (background, count) and of objects (shape, colour, size) that are right."""

    pictures: int
    objects: int
    background: float
    count: float
    shape: float
    colour: float
    size: float

    def row(self) -> str:
        return " | ".join(f"{100 * getattr(self, k):.1f}%" for k in ("colour", "shape", "size", "background", "count"))


def score(scene_list: list[Scene], analyses: list[Analysis], by_place: bool) -> Score:
    """Compare analyses with the ground truth; objects are paired by place (renders, reconstructions) or, for
    samples, whose places the caption does not fix, left to right when the counts agree (else all wrong)."""
    right, objects = Counter(), 0
    for scene, analysis in zip(scene_list, analyses):
        right["background"] += analysis.background == scene.background
        right["count"] += len(analysis.things) == len(scene.things)
        if by_place:
            found = match(scene, analysis)
        else:
            found = list(analysis.things) if len(analysis.things) == len(scene.things) else [None] * len(scene.things)
        for thing, f in zip(scene.things, found):
            objects += 1
            for key in ATTRIBUTES:
                right[key] += f is not None and getattr(f, key) == getattr(thing, key)
    n = len(scene_list)
    return Score(
        n,
        objects,
        right["background"] / n,
        right["count"] / n,
        *(right[k] / max(1, objects) for k in ATTRIBUTES),
    )


def vae_roundtrip(vae, images: list[Image.Image]) -> list[Image.Image]:
    """Encode (posterior mean) and decode, as every inversion's ceiling does."""
    x = torch.from_numpy(np.stack([np.asarray(i) for i in images])).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        y = vae.decode(vae.encode(x).latent_dist.mean).sample
    pixels = ((y.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    return [Image.fromarray(p) for p in pixels]


def sample_all(sampler: Sampler, captions: list[str], seed: int, batch: int = 32) -> list[Image.Image]:
    images = []
    for start in tqdm(range(0, len(captions), batch), desc="sampling", leave=False):
        images += sampler(captions[start : start + batch], seed + start)
    return images


def pipeline_sampler(pipe, steps: int, guidance: float) -> Sampler:
    def sample(captions: list[str], seed: int) -> list[Image.Image]:
        generator = torch.Generator().manual_seed(seed)
        return pipe(captions, num_inference_steps=steps, guidance_scale=guidance, generator=generator).images

    return sample


def caption_sets(count: int, seed: int) -> dict[str, list[Scene]]:
    """Captions to sample: held-out single objects (the headline), held-out pairs, training single objects."""
    return {
        "held-out, one object": scenes(seed, count, "test", objects=1),
        "held-out, two objects": scenes(seed + 1, count, "test", objects=2),
        "training, one object": scenes(seed + 2, count, "train", objects=1),
    }


def evaluate(folder_lcm: Path, folder_sd: Path, count: int, seed: int, guidance: float, teacher_guidance: float):
    from diffusers import LatentConsistencyModelPipeline, StableDiffusionPipeline

    lcm = LatentConsistencyModelPipeline.from_pretrained(folder_lcm, dtype=torch.float32)
    sd = StableDiffusionPipeline.from_pretrained(folder_sd, dtype=torch.float32)
    for pipe in (lcm, sd):
        pipe.set_progress_bar_config(disable=True)
    results: dict[str, dict] = {}
    truth = scenes(seed + 10, count, "all")
    renders = [render(s).image for s in truth]
    rebuilt = vae_roundtrip(lcm.vae, renders)
    results["analyzer on renders"] = score(truth, [analyze(i) for i in renders], by_place=True).__dict__
    results["analyzer on VAE reconstructions"] = score(truth, [analyze(i) for i in rebuilt], by_place=True).__dict__
    results["vae_psnr_db"] = float(np.mean([psnr(a, b) for a, b in zip(renders, rebuilt)]))
    samplers = {
        f"student, LCM 4 steps, guidance {guidance}": pipeline_sampler(lcm, 4, guidance),
        f"teacher, DDIM 50 steps, guidance {teacher_guidance}": pipeline_sampler(sd, 50, teacher_guidance),
    }
    for name, sampler in samplers.items():
        for set_name, scene_list in caption_sets(count, seed).items():
            images = sample_all(sampler, [s.caption for s in scene_list], seed)
            results[f"{name}: {set_name}"] = score(scene_list, [analyze(i) for i in images], by_place=False).__dict__
    return results


def report(results: dict) -> str:
    lines = [
        f"VAE reconstruction PSNR on renders: {results['vae_psnr_db']:.2f} dB",
        "",
        "| what | pictures | colour | shape | size | background | object count |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, value in results.items():
        if isinstance(value, dict):
            lines.append(f"| {name} | {value['pictures']} | {Score(**value).row()} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m rnri_lab.shapes.evaluate", description=__doc__.split("\n")[0])
    parser.add_argument("--lcm", type=Path, default=models.STUDENT_DIR)
    parser.add_argument("--sd", type=Path, default=models.TEACHER_DIR)
    parser.add_argument("--count", type=int, default=128, help="captions (and renders) per set")
    parser.add_argument("--seed", type=int, default=1000)
    parser.add_argument("--guidance", type=float, default=models.DEFAULT_GUIDANCE, help="the student's")
    parser.add_argument("--teacher-guidance", type=float, default=models.TEACHER_GUIDANCE)
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args(argv)
    results = evaluate(args.lcm, args.sd, args.count, args.seed, args.guidance, args.teacher_guidance)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    print(report(results))


if __name__ == "__main__":
    main()
