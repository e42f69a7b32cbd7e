"""FLUX.1 (``FluxPipeline``) as the rectified-flow chain of ``rnri.core.samplers.flow``: its schedule, its packed
latents and its conditioning, exactly as the stock pipeline runs them.

``FluxPipeline.__call__`` (diffusers 0.42) samples this way:
    latents     (B, h w / 4, 64): the VAE's (B, 16, h, w) cut into 2x2 patches (``_pack_latents``); ``latents=``
                takes this packed form, and the start is ``latents`` itself (no ``init_noise_sigma``)
    schedule    ``sigmas = linspace(1, 1 / n, n)`` given to ``scheduler.set_timesteps(sigmas=..., mu=mu)``, which
                shifts them (FLUX.1-schnell: ``shift=1``, unchanged; FLUX.1-dev: dynamic shifting by
                ``mu = calculate_shift(h w / 4)``) and appends sigma 0; timesteps are ``1000 sigma``
    transformer ``v = transformer(latents, timestep=t / 1000, guidance, pooled_projections=CLIP pooled,
                encoder_hidden_states=T5 states, txt_ids=zeros (L, 3), img_ids=(row, column) of each patch)``;
                ``guidance`` is ``guidance_scale`` where the transformer embeds guidance (dev), else None (schnell)
    step        ``scheduler.step``: ``latents + (sigma_next - sigma) v`` in float32, cast back to the latents' dtype
    VAE         ``z = (mean - shift_factor) scaling_factor``; decoding takes ``z / scaling_factor + shift_factor``

rnri keeps the chain unpacked, (B, 16, h, w), the layout masks and saved inversions share with every backbone, and
packs only around the transformer call; ``stock_latents`` packs a start latent for ``pipe(latents=...)``.
No classifier-free guidance is run (diffusers' ``true_cfg_scale`` with a negative prompt is not supported).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline
from diffusers.pipelines.flux.pipeline_flux import calculate_shift

from rnri.core.chain import EpsFn
from rnri.core.samplers.flow import FlowStep

PATCH = 2  # FLUX packs 2x2 latent pixels into one token


def is_flux(pipe: Any) -> bool:
    """Whether ``pipe`` is a ``FluxPipeline`` (or a subclass)."""
    return isinstance(pipe, FluxPipeline)


# --- the schedule ------------------------------------------------------------------------------------------------


def image_seq_len(latent_size: tuple[int, int]) -> int:
    """Tokens of a latent of ``latent_size = (h, w)``: one per 2x2 patch."""
    return (latent_size[0] // PATCH) * (latent_size[1] // PATCH)


def flow_steps(
    scheduler: FlowMatchEulerDiscreteScheduler, num_inference_steps: int, latent_size: tuple[int, int] | None = None
) -> list[FlowStep]:
    """The Euler steps ``FluxPipeline`` runs at ``num_inference_steps`` on latents of ``latent_size`` (the schedule's
    shift depends on the image's size where the scheduler shifts dynamically, and only there may it be None); the
    scheduler is left as it was."""
    config = scheduler.config
    if config.get("stochastic_sampling") or config.get("invert_sigmas"):
        raise ValueError("rnri runs FlowMatchEulerDiscreteScheduler without stochastic_sampling or invert_sigmas")
    if latent_size is None and config.use_dynamic_shifting:
        raise ValueError("this flow schedule shifts with the image's size (dynamic shifting): give latent_size")
    scheduler = type(scheduler).from_config(config)
    mu = calculate_shift(
        image_seq_len(latent_size or (0, 0)),
        config.get("base_image_seq_len", 256),
        config.get("max_image_seq_len", 4096),
        config.get("base_shift", 0.5),
        config.get("max_shift", 1.15),
    )
    if config.get("use_flow_sigmas"):  # as FluxPipeline: the scheduler makes its own sigmas
        scheduler.set_timesteps(num_inference_steps, mu=mu)
    else:
        scheduler.set_timesteps(sigmas=np.linspace(1.0, 1 / num_inference_steps, num_inference_steps), mu=mu)
    timesteps, sigmas = [float(t) for t in scheduler.timesteps], [float(s) for s in scheduler.sigmas]
    return [FlowStep(t, sigmas[i], sigmas[i + 1], i == len(timesteps) - 1) for i, t in enumerate(timesteps)]


# --- packed latents ------------------------------------------------------------------------------------------------


def pack(z: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) -> (B, h w / 4, 4 C), as ``FluxPipeline._pack_latents``: one token per 2x2 patch, row-major."""
    b, c, h, w = z.shape
    z = z.view(b, c, h // PATCH, PATCH, w // PATCH, PATCH).permute(0, 2, 4, 1, 3, 5)  # (B, h/2, w/2, C, 2, 2)
    return z.reshape(b, (h // PATCH) * (w // PATCH), c * PATCH * PATCH)


def unpack(tokens: torch.Tensor, latent_size: tuple[int, int]) -> torch.Tensor:
    """(B, h w / 4, 4 C) -> (B, C, h, w), the inverse of :func:`pack` (``FluxPipeline._unpack_latents``)."""
    (b, _, d), (h, w) = tokens.shape, latent_size
    z = tokens.view(b, h // PATCH, w // PATCH, d // (PATCH * PATCH), PATCH, PATCH).permute(0, 3, 1, 4, 2, 5)
    return z.reshape(b, d // (PATCH * PATCH), h, w)


def image_ids(latent_size: tuple[int, int], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(h w / 4, 3): each token's (0, row, column), as ``FluxPipeline._prepare_latent_image_ids``."""
    rows, columns = latent_size[0] // PATCH, latent_size[1] // PATCH
    ids = torch.zeros(rows, columns, 3)
    ids[..., 1] = torch.arange(rows)[:, None]
    ids[..., 2] = torch.arange(columns)[None, :]
    return ids.reshape(rows * columns, 3).to(device=device, dtype=dtype)


# --- conditioning --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FluxConditioning:
    """What the transformer sees besides the latent and the timestep."""

    text: torch.Tensor  # T5 hidden states (B, L, 4096), every prompt padded to the backbone's max_sequence_length
    pooled: torch.Tensor  # CLIP's pooled embedding (B, 768)
    guidance: float | None  # the guidance-distilled model's embedded guidance (FLUX.1-dev); None without one


def embedded_guidance(pipe: FluxPipeline, guidance_scale: float) -> float | None:
    """``guidance_scale`` where the transformer embeds guidance (FLUX.1-dev), None where it takes none (schnell).

    ``ValueError`` for guidance above 1 on a transformer without a guidance embedding: the stock pipeline ignores it
    silently, and rnri runs no classifier-free guidance on FLUX, so it would change nothing.
    """
    if pipe.transformer.config.guidance_embeds:
        return guidance_scale
    if guidance_scale > 1.0:
        raise ValueError(
            "this FLUX model (FLUX.1-schnell) is timestep-distilled and takes no guidance: it has no guidance "
            "embedding and rnri runs no classifier-free guidance on FLUX; use guidance_scale 0, "
            f"got {guidance_scale:g}"
        )
    return None


def velocity_fn(pipe: FluxPipeline, cond: FluxConditioning, latent_size: tuple[int, int]) -> EpsFn:
    """``v(z, t)`` of the pipeline's transformer under ``cond`` for latents (B, 16, h, w) of ``latent_size``;
    float32 in and out, the transformer run in its own dtype as the stock pipeline runs it (the timestep too)."""
    transformer = pipe.transformer
    dtype, device = transformer.dtype, pipe._execution_device
    img_ids = image_ids(latent_size, device, dtype)
    txt_ids = torch.zeros(cond.text.shape[1], 3, device=device, dtype=dtype)

    def velocity(z: torch.Tensor, t: float) -> torch.Tensor:
        items = z.shape[0]
        guidance = None if cond.guidance is None else torch.full((items,), cond.guidance, device=z.device)
        out = transformer(
            hidden_states=pack(z).to(dtype),
            timestep=torch.full((items,), t, device=z.device).to(dtype) / 1000,
            guidance=guidance,
            pooled_projections=cond.pooled,
            encoder_hidden_states=cond.text,
            txt_ids=txt_ids,
            img_ids=img_ids,
            return_dict=False,
        )[0]
        return unpack(out.float(), latent_size)

    return velocity


def stock_latents(latents: torch.Tensor) -> torch.Tensor:
    """The start latent (1, 16, h, w) packed as ``FluxPipeline`` takes it as ``latents=``: (1, h w / 4, 64)."""
    return pack(latents)
