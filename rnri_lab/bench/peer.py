"""The peer baseline: diffusers' own ``DDIMInverseScheduler`` inversion and ``DDIMScheduler`` sampling, unmodified.

This is how stock diffusers pipelines invert (``StableDiffusionDiffEditPipeline.invert``, pix2pix-zero): evaluate
the UNet at the *next* timestep on the current latent and step the inverse scheduler, once per step. Those
schedulers assume evenly spaced timesteps (``t - num_train_timesteps // num_inference_steps`` is the step before
``t``), which LCM's schedule (999, 759, 499, 259) is not. With ``timestep_spacing="trailing"`` and
``set_alpha_to_one=True`` they run the deterministic DDIM chain on (999, 749, 499, 249) down to the clean latent,
so the peer is compared on that chain (``ddim-uniform``), where rnri's methods run too.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import DDIMInverseScheduler, DDIMScheduler

from rnri.core.chain import EpsFn, LCMStep

UNIFORM_OVERRIDES: dict[str, Any] = {"timestep_spacing": "trailing", "set_alpha_to_one": True, "steps_offset": 0}


def inverse_scheduler(config: Any, num_inference_steps: int) -> DDIMInverseScheduler:
    """diffusers' DDIM inverse scheduler on the noise schedule of ``config`` (any scheduler's), trailing spacing."""
    scheduler = DDIMInverseScheduler.from_config(config, **UNIFORM_OVERRIDES, clip_sample=False)
    scheduler.set_timesteps(num_inference_steps)
    return scheduler


def forward_scheduler(config: Any, num_inference_steps: int) -> DDIMScheduler:
    """diffusers' DDIM scheduler (eta = 0) on the same timesteps as :func:`inverse_scheduler`, noisiest first."""
    scheduler = DDIMScheduler.from_config(config, **UNIFORM_OVERRIDES, clip_sample=False)
    scheduler.set_timesteps(num_inference_steps)
    return scheduler


def uniform_ddim_steps(config: Any, num_inference_steps: int) -> list[LCMStep]:
    """rnri step maps of the chain the diffusers schedulers run: pure DDIM (c_skip 0, c_out 1), last step to clean."""
    scheduler = forward_scheduler(config, num_inference_steps)
    timesteps = [int(t) for t in scheduler.timesteps]
    acp = scheduler.alphas_cumprod
    return [
        LCMStep(
            t,
            float(acp[t]),
            1.0 if i == len(timesteps) - 1 else float(acp[timesteps[i + 1]]),
            0.0,
            1.0,
            i == len(timesteps) - 1,
        )
        for i, t in enumerate(timesteps)
    ]


@torch.no_grad()
def invert(eps_fn: EpsFn, config: Any, z0: torch.Tensor, num_inference_steps: int) -> torch.Tensor:
    """z_T of clean latents ``z0`` (B, C, H, W) by diffusers' DDIM inversion loop: one UNet call per step."""
    scheduler = inverse_scheduler(config, num_inference_steps)
    z = z0
    for t in scheduler.timesteps:
        z = scheduler.step(eps_fn(z, int(t)), int(t), z).prev_sample
    return z


@torch.no_grad()
def sample(eps_fn: EpsFn, config: Any, z_T: torch.Tensor, num_inference_steps: int) -> torch.Tensor:
    """The clean latent diffusers' DDIM sampler (eta = 0) makes from ``z_T``."""
    scheduler = forward_scheduler(config, num_inference_steps)
    z = z_T
    for t in scheduler.timesteps:
        z = scheduler.step(eps_fn(z, int(t)), int(t), z, eta=0.0).prev_sample
    return z
