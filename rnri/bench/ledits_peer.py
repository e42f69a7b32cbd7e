"""The peer nobody here wrote: LEdits++ as diffusers ships it (``LEditsPPPipelineStableDiffusion``), on the shapes
DDIM teacher, scored on ShapeEdit beside rnri's rows (``python -m rnri.bench.shapes --control --ledits``).

LEdits++ inverts with edit-friendly DDPM noise and samples with its default SDE-DPM-Solver++ (order 2) on the
teacher's schedule: its DDIM path fails in diffusers 0.42 (``invert`` indexes ``DDIMScheduler.add_noise`` with a
float timestep). It edits from the source caption towards the new words and away from the old ones
(``reverse_editing_direction``), with its defaults otherwise. Its implicit masks use
the noise difference only: its attention store keeps maps at a quarter of the latent size (4x4 here), where the
teacher's UNet has no cross-attention (it has it at 8x8), so the cross-attention and intersection masks cannot run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from diffusers import DPMSolverMultistepScheduler, LEditsPPPipelineStableDiffusion, StableDiffusionPipeline
from PIL import Image

from rnri.counting import count_unet_calls


@dataclass(frozen=True)
class LEditsConfig:
    """LEdits++'s settings; the defaults are diffusers' own."""

    num_inversion_steps: int = 30  # steps of the edit-friendly inversion (after skipping ``skip`` of the chain)
    skip: float = 0.15  # share of the noisiest steps skipped
    source_guidance_scale: float = 3.5  # classifier-free guidance of the source caption during inversion
    edit_guidance_scale: float = 5.0  # s_e of each direction
    edit_threshold: float = 0.9  # lambda: quantile of the noise-difference mask
    seed: int = 0  # the generator of the inversion's noise


@dataclass(frozen=True)
class Cost:
    """What one piece of LEdits++ work cost."""

    unet_calls: int
    forward_equivalents: int  # the calls weighted by their batch
    seconds: float


def ledits_pipeline(teacher: StableDiffusionPipeline) -> LEditsPPPipelineStableDiffusion:
    """LEdits++ on the teacher's own components (shared, not copied) and schedule, with LEdits++'s sampler."""
    solver = DPMSolverMultistepScheduler.from_config(
        teacher.scheduler.config, algorithm_type="sde-dpmsolver++", solver_order=2
    )
    pipe = LEditsPPPipelineStableDiffusion(
        vae=teacher.vae,
        text_encoder=teacher.text_encoder,
        tokenizer=teacher.tokenizer,
        unet=teacher.unet,
        scheduler=solver,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def ledits_invert(
    pipe: LEditsPPPipelineStableDiffusion, photo: Image.Image, caption: str, config: LEditsConfig = LEditsConfig()
) -> Cost:
    """Invert ``photo`` under its ``caption``; the pipeline keeps the inversion for the edits that follow."""
    start = time.perf_counter()
    with count_unet_calls(pipe.unet) as calls:
        pipe.invert(
            image=photo,
            source_prompt=caption,
            source_guidance_scale=config.source_guidance_scale,
            num_inversion_steps=config.num_inversion_steps,
            skip=config.skip,
            generator=torch.Generator().manual_seed(config.seed),
        )
    return Cost(calls.forwards, calls.items, time.perf_counter() - start)


def ledits_edit(
    pipe: LEditsPPPipelineStableDiffusion, removed: str, added: str, config: LEditsConfig = LEditsConfig()
) -> tuple[Image.Image, Cost]:
    """Edit the last inverted photo towards ``added`` and away from ``removed``."""
    start = time.perf_counter()
    with count_unet_calls(pipe.unet) as calls:
        image = pipe(
            editing_prompt=[added, removed],
            reverse_editing_direction=[False, True],
            edit_guidance_scale=config.edit_guidance_scale,
            edit_threshold=config.edit_threshold,
            use_cross_attn_mask=False,
            use_intersect_mask=False,
            generator=torch.Generator().manual_seed(config.seed),
        ).images[0]
    return image, Cost(calls.forwards, calls.items, time.perf_counter() - start)
