"""The kinds of pipeline rnri runs on, each with the defaults it is used at: the one place that maps a backbone
to its steps, guidance and resolution (README, "Backbones"). Front ends ask :func:`default_guidance` of the
pipeline they hold (or :func:`guidance_defaults` and :func:`steps_defaults` for a help text) instead of writing a
number down.

A pipeline's backbone follows from its scheduler and denoiser config alone (:func:`backbone_of`), so a model loaded
any way (``rnri.load_pipeline``, ``from_pretrained``, ``AutoPipelineForText2Image``) gets the same defaults.
Importing this module loads nothing (``rnri --help`` reads the table): diffusers is imported when a pipeline is
looked at.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

DEFAULT_MODEL = "SimianLuo/LCM_Dreamshaper_v7"  # what the front ends load when no model is named (an LCM)


@dataclass(frozen=True)
class Backbone:
    """A kind of pipeline and its defaults."""

    name: str
    num_inference_steps: int  # sampling steps of the chain
    guidance_scale: float  # guidance of sampling and edits
    inversion_guidance_scale: float  # guidance the inversion (and so a faithful reconstruction) runs at
    resolution: int | None = None  # long side photos are fitted to; None: the denoiser's native size
    description: str = ""  # how it is recognised and what it is, for the README and the editor
    takes_guidance: bool = True  # False: no guidance of any kind (FLUX.1-schnell); guidance above 1 is refused
    max_sequence_length: int | None = None  # T5 tokens a prompt is padded to (FLUX); None: no T5 encoder


LCM = Backbone(
    "lcm", 4, 8.5, 8.5, description="LCMScheduler, UNet with a guidance embedding (e.g. LCM_Dreamshaper_v7)"
)
LCM_LORA = Backbone(
    "lcm-lora", 4, 1.0, 1.0, description="LCMScheduler, UNet without one: an LCM-LoRA, guidance classifier-free"
)
STABLE_DIFFUSION = Backbone(
    "stable-diffusion",
    50,
    7.5,
    1.0,
    description="DDIMScheduler (or an Euler one with leading/linspace spacing): SD 1.5, 2.x, SDXL; the inversion "
    "at guidance 1 (no CFG), as is usual, edits at 7.5",
)
TURBO = Backbone(
    "turbo",
    4,
    0.0,
    0.0,
    resolution=512,
    description="EulerDiscreteScheduler or EulerAncestralDiscreteScheduler with trailing spacing: SD-Turbo, "
    "SDXL-Turbo (512 px, no guidance)",
)
FLUX_SCHNELL = Backbone(
    "flux-schnell",
    4,
    0.0,
    0.0,
    description="FluxPipeline whose transformer has no guidance embedding: FLUX.1-schnell (timestep-distilled, "
    "no guidance, 1024 px native, T5 prompts of 256 tokens as it was trained)",
    takes_guidance=False,
    max_sequence_length=256,
)
FLUX_DEV = Backbone(
    "flux-dev",
    28,
    3.5,
    3.5,
    description="FluxPipeline whose transformer embeds guidance: FLUX.1-dev (guidance-distilled: guidance is an "
    "input of one call, no CFG batch; 1024 px native, T5 prompts of 512 tokens)",
    max_sequence_length=512,
)
BACKBONES = (LCM, LCM_LORA, STABLE_DIFFUSION, TURBO, FLUX_SCHNELL, FLUX_DEV)


def backbone_of(pipe: Any) -> Backbone:
    """The backbone of a stock pipeline; ``ValueError`` naming what is supported for any other pipeline or scheduler.

    LCMScheduler: :data:`LCM` where the UNet takes a guidance embedding, else :data:`LCM_LORA`. Euler schedulers
    with ``timestep_spacing="trailing"`` (as the Turbo models ship): :data:`TURBO`. Every other supported scheduler
    (DDIM; Euler with other spacings, as SDXL base ships): :data:`STABLE_DIFFUSION`. ``FluxPipeline``:
    :data:`FLUX_DEV` where its transformer embeds guidance, else :data:`FLUX_SCHNELL`.
    """
    from diffusers import EulerAncestralDiscreteScheduler, EulerDiscreteScheduler, LCMScheduler

    from rnri.pipelines import adapter, flux

    adapter.check_pipeline(pipe)
    scheduler = pipe.scheduler
    adapter.scheduler_chains(scheduler)  # refuses unsupported schedulers
    if flux.is_flux(pipe):
        return FLUX_DEV if pipe.transformer.config.guidance_embeds else FLUX_SCHNELL
    if isinstance(scheduler, LCMScheduler):
        return LCM if adapter.embeds_guidance(pipe) else LCM_LORA
    sigma_schedule = isinstance(scheduler, EulerDiscreteScheduler | EulerAncestralDiscreteScheduler)
    if sigma_schedule and scheduler.config.timestep_spacing == "trailing":
        return TURBO
    return STABLE_DIFFUSION


def default_guidance(pipe: Any, edit: bool = False) -> float:
    """The guidance ``pipe``'s backbone inverts at, or with ``edit`` edits at (they differ for Stable Diffusion:
    the inversion without CFG, the edit with it)."""
    backbone = backbone_of(pipe)
    return backbone.guidance_scale if edit else backbone.inversion_guidance_scale


def guidance_defaults(edit: bool = False) -> str:
    """Every backbone's default guidance (the inversion's, or with ``edit`` the edit's), for a help text:
    ``"lcm 8.5, lcm-lora 1, stable-diffusion 1, turbo 0, flux-schnell 0, flux-dev 3.5"``."""
    return ", ".join(f"{b.name} {b.guidance_scale if edit else b.inversion_guidance_scale:g}" for b in BACKBONES)


def steps_defaults() -> str:
    """Every backbone's default steps, for a help text: ``"lcm 4, lcm-lora 4, stable-diffusion 50, turbo 4, ..."``."""
    return ", ".join(f"{b.name} {b.num_inference_steps}" for b in BACKBONES)
