"""The test models and chains of the bench: analytic denoisers with known answers, and LCM pipelines' UNets."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from diffusers import LCMScheduler
from PIL import Image
from torch import nn

from rnri.core.chain import EpsFn, Step
from rnri.pipelines.adapter import encode_image, encode_prompt, guidance_embedding, lcm_steps, unet_eps_fn
from rnri.pipelines.loading import load_pipeline
from rnri_lab.analytic import FAMILIES, GaussianMixtureUNet, MixtureConfig
from rnri_lab.bench.peer import uniform_ddim_steps

CHAINS = ("lcm", "ddim", "ddim-uniform")  # stochastic LCM; deterministic on LCM's timesteps; diffusers' DDIM chain
TINY = "tiny-lcm"
PROMPT = "a photo of a cat sitting on a sofa"  # the pipelines' prompt; any fixed prompt does
GUIDANCE = 8.5  # the stock LCM pipeline's default


@dataclass
class TestModel:
    """A noise predictor to invert through, and how to draw a clean latent that is not made by the chain."""

    name: str
    unet: nn.Module  # the module whose forward and backward passes are counted
    eps_fn: EpsFn  # eps(z, t) with prompt and guidance fixed
    shape: tuple[int, int, int]  # latent (C, H, W)
    scheduler_config: Any  # the noise schedule, as a diffusers scheduler config
    draw_data: Callable[[torch.Generator], torch.Tensor]  # a clean latent (1, C, H, W), as a real photo gives


def analytic_model(family: str) -> TestModel:
    """A Gaussian-mixture denoiser of ``rnri_lab.analytic`` (exact eps); its data are draws from the mixture."""
    unet = GaussianMixtureUNet(MixtureConfig(family=family))

    def eps_fn(z: torch.Tensor, t: int) -> torch.Tensor:
        return unet(z, t, return_dict=False)[0]

    return TestModel(family, unet, eps_fn, unet.shape, LCMScheduler().config, lambda g: unet.sample_data(1, g))


def pipeline_model(name: str, model: str = "tiny") -> TestModel:
    """The UNet of an LCM pipeline (``rnri.load_pipeline``) on the CPU; its data are VAE latents of smooth images.

    The latents are scaled to unit standard deviation, as Stable Diffusion's scaled latents roughly are: the tiny
    pipeline's random VAE gives latents near zero, against which every relative error would read as huge.
    """
    pipe = load_pipeline(model, device="cpu")
    eps_fn = unet_eps_fn(pipe, encode_prompt(pipe, PROMPT), guidance_embedding(pipe, GUIDANCE))
    side = pipe.unet.config.sample_size * pipe.vae_scale_factor
    shape = (pipe.unet.config.in_channels, pipe.unet.config.sample_size, pipe.unet.config.sample_size)

    def draw_data(g: torch.Generator) -> torch.Tensor:
        coarse = torch.rand(8, 8, 3, generator=g).numpy()  # upsampled: smooth, like a photo rather than noise
        image = Image.fromarray((coarse * 255).astype(np.uint8), "RGB").resize((side, side), Image.Resampling.BICUBIC)
        latents = encode_image(pipe, image)
        return latents / latents.std().clamp_min(1e-12)

    return TestModel(name, pipe.unet, eps_fn, shape, pipe.scheduler.config, draw_data)


def make_model(name: str, pipeline: str | None = None) -> TestModel:
    """A test model by name: an analytic family, ``tiny-lcm``, or ``pipeline`` (a Hub id or folder) for ``lcm``."""
    if name in FAMILIES:
        return analytic_model(name)
    if name == TINY:
        return pipeline_model(name, "tiny")
    if name == "lcm" and pipeline:
        return pipeline_model(name, pipeline)
    raise ValueError(f"unknown test model {name!r}; choose from {[*FAMILIES, TINY]} or 'lcm' with a pipeline")


def chain_steps(chain: str, scheduler_config: Any, num_inference_steps: int) -> list[Step]:
    """The step maps of ``chain`` on the model's noise schedule."""
    if chain == "ddim-uniform":
        return uniform_ddim_steps(scheduler_config, num_inference_steps)
    if chain in ("lcm", "ddim"):
        return lcm_steps(LCMScheduler.from_config(scheduler_config), num_inference_steps)
    raise ValueError(f"unknown chain {chain!r}; choose one of {CHAINS}")
