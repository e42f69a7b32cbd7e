"""A peer nobody here wrote: diffusers' LEdits++ (Brack et al. 2024), ``LEditsPPPipelineStableDiffusion.invert``
and its edit (``LEditsPPPipelineStableDiffusionXL`` for SDXL), run unmodified on the same Stable Diffusion
pipeline and photo as rnri's methods, timed, with its UNet calls counted by hooks.

LEdits++ inverts by edit-friendly DDPM noise maps (Huberman-Spiegelglas et al. 2024) on its recommended scheduler,
multistep SDE-DPM-Solver++ of order 2 (its DDIM path fails in diffusers 0.42: ``invert`` indexes
``DDIMScheduler.add_noise`` with a float timestep), and edits by semantic guidance toward (and away from) concepts.
Two ways in: :func:`ledits_edit`, a photo and rnri's source and target prompts (the target steered toward and, with
``away_from_source``, the source away from, as its documentation's replacement example does; ``target_prompt=None``
regenerates without an edit), for the family benchmark; and :func:`ledits_invert` then :func:`ledits_words`, one
inversion and many edits from the old words to the new, for ShapeEdit (``python -m rnri_lab.bench.shapes --ledits``,
with ``SHAPEEDIT``: diffusers' own defaults, and masks from the noise difference only, since the shapes teacher's
attention maps at a quarter of the latent size (4x4) have no cross-attention).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch
from diffusers import (
    DPMSolverMultistepScheduler,
    LEditsPPPipelineStableDiffusion,
    LEditsPPPipelineStableDiffusionXL,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
)
from PIL import Image

from rnri.core.counting import UNetCalls, count_unet_calls
from rnri.pipelines.adapter import native_resolution
from rnri.pipelines.images import fit_size, to_rgb

LEDITS = {
    StableDiffusionPipeline: LEditsPPPipelineStableDiffusion,
    StableDiffusionXLPipeline: LEditsPPPipelineStableDiffusionXL,
}
SIDE_MULTIPLE = 32  # LEdits++ refuses images whose sides are not multiples of 32


@dataclass(frozen=True)
class LEditsConfig:
    """LEdits++'s settings; the defaults are its documentation's example (``num_inversion_steps=50, skip=0.1``,
    ``edit_guidance_scale=10, edit_threshold=0.75``) and its own defaults otherwise."""

    num_inversion_steps: int = 50  # steps inverted (and regenerated) after the skipped ones
    skip: float = 0.1  # fraction of the noisiest steps neither inverted nor regenerated
    source_guidance_scale: float = 3.5  # CFG of the inversion under the source prompt
    edit_guidance_scale: float = 10.0  # semantic guidance per concept
    edit_threshold: float = 0.75  # the quantile of each concept's guidance that its mask keeps
    away_from_source: bool = True  # also steer away from the source prompt
    seed: int = 0  # of the generator the inversion draws its noisy latents from
    resolution: int | None = None  # long side photos are fitted to (a multiple of 32); None: the UNet's native


SHAPEEDIT = LEditsConfig(num_inversion_steps=30, skip=0.15, edit_guidance_scale=5.0, edit_threshold=0.9)


@dataclass(frozen=True)
class Cost:
    """What one piece of LEdits++ work cost."""

    unet_calls: int
    forward_equivalents: int  # the calls weighted by their batch
    seconds: float


@dataclass
class PeerResult:
    """What the peer made and what it cost."""

    image: Image.Image  # the edit (or, with no target prompt, the reconstruction), at the photo's size
    invert_seconds: float  # wall time of the inversion
    edit_seconds: float  # wall time of the regeneration
    invert_calls: UNetCalls = field(default_factory=UNetCalls)  # UNet calls of the inversion (hooks)
    edit_calls: UNetCalls = field(default_factory=UNetCalls)  # UNet calls of the edit; each is one batch of
    # 1 + the number of concepts

    @property
    def seconds(self) -> float:
        return self.invert_seconds + self.edit_seconds

    @property
    def unet_calls(self) -> int:
        return self.invert_calls.forwards + self.edit_calls.forwards


def ledits_pipeline(pipe: Any) -> Any:
    """The LEdits++ pipeline sharing ``pipe``'s weights, on a fresh SDE-DPM-Solver++ (order 2) scheduler."""
    ledits = next((peer for kind, peer in LEDITS.items() if isinstance(pipe, kind)), None)
    if ledits is None:
        raise ValueError(f"LEdits++ runs on {[k.__name__ for k in LEDITS]}, got {type(pipe).__name__}")
    scheduler = DPMSolverMultistepScheduler.from_config(
        pipe.scheduler.config, algorithm_type="sde-dpmsolver++", solver_order=2
    )
    peer = ledits.from_pipe(pipe, scheduler=scheduler)
    peer.set_progress_bar_config(disable=True)
    return peer


def ledits_edit(
    pipe: Any, photo: Image.Image, source_prompt: str, target_prompt: str | None, config: LEditsConfig = LEditsConfig()
) -> PeerResult:
    """Invert ``photo`` under ``source_prompt`` with LEdits++ on ``pipe`` (a Stable Diffusion or SDXL pipeline) and
    edit it toward ``target_prompt`` (None: regenerate unedited). ``pipe`` is left as it was."""
    peer = ledits_pipeline(pipe)
    rgb = to_rgb(photo)
    fitted = rgb.resize(fit_size(*rgb.size, config.resolution or native_resolution(pipe), SIDE_MULTIPLE))
    processors = pipe.unet.attn_processors  # LEdits++ replaces them on the shared UNet
    try:
        with count_unet_calls(pipe.unet) as invert_calls:
            start = time.perf_counter()
            _invert(peer, fitted, source_prompt, config)
            invert_seconds = _elapsed(start, pipe)
        with count_unet_calls(pipe.unet) as edit_calls:
            start = time.perf_counter()
            image = peer(**_edit_arguments(source_prompt, target_prompt, config)).images[0]
            edit_seconds = _elapsed(start, pipe)
    finally:
        pipe.unet.set_attn_processor(processors)
    return PeerResult(
        image.resize(rgb.size, Image.Resampling.LANCZOS), invert_seconds, edit_seconds, invert_calls, edit_calls
    )


def _edit_arguments(source_prompt: str, target_prompt: str | None, config: LEditsConfig) -> dict[str, Any]:
    """Keyword arguments of the LEdits++ call: concepts, their directions, scales and thresholds."""
    if target_prompt is None:
        return {}
    concepts, away = [target_prompt], [False]
    if config.away_from_source:
        concepts, away = [source_prompt, target_prompt], [True, False]
    return {
        "editing_prompt": concepts,
        "reverse_editing_direction": away,
        "edit_guidance_scale": [config.edit_guidance_scale] * len(concepts),
        "edit_threshold": [config.edit_threshold] * len(concepts),
    }


def _elapsed(start: float, pipe: Any) -> float:
    if pipe.device.type == "cuda":
        torch.cuda.synchronize(pipe.device)
    return time.perf_counter() - start


def ledits_invert(peer: Any, photo: Image.Image, caption: str, config: LEditsConfig = SHAPEEDIT) -> Cost:
    """Invert ``photo`` under its ``caption`` on ``peer`` (:func:`ledits_pipeline`), which keeps the inversion for
    the edits that follow."""
    start = time.perf_counter()
    with count_unet_calls(peer.unet) as calls:
        _invert(peer, photo, caption, config)
    return Cost(calls.forwards, calls.items, _elapsed(start, peer))


def _invert(peer: Any, photo: Image.Image, caption: str, config: LEditsConfig) -> None:
    peer.invert(
        image=photo,
        source_prompt=caption,
        source_guidance_scale=config.source_guidance_scale,
        num_inversion_steps=config.num_inversion_steps,
        skip=config.skip,
        generator=torch.Generator().manual_seed(config.seed),
    )


def ledits_words(peer: Any, removed: str, added: str, config: LEditsConfig = SHAPEEDIT) -> tuple[Image.Image, Cost]:
    """Edit the photo ``peer`` inverted last toward ``added`` and away from ``removed`` (masks from the noise
    difference only)."""
    start = time.perf_counter()
    with count_unet_calls(peer.unet) as calls:
        image = peer(
            editing_prompt=[added, removed],
            reverse_editing_direction=[False, True],
            edit_guidance_scale=config.edit_guidance_scale,
            edit_threshold=config.edit_threshold,
            use_cross_attn_mask=False,
            use_intersect_mask=False,
            generator=torch.Generator().manual_seed(config.seed),
        ).images[0]
    return image, Cost(calls.forwards, calls.items, _elapsed(start, peer))
