"""Turning a stock diffusers LCM pipeline into the step maps and noise predictor of the math layer."""

from __future__ import annotations

import warnings
import weakref
from collections import OrderedDict

import torch
from diffusers import LatentConsistencyModelPipeline
from diffusers.schedulers import LCMScheduler
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image

from rnri.chain import EpsFn, Step


def lcm_steps(scheduler: LCMScheduler, num_inference_steps: int) -> list[Step]:
    """The step maps of ``scheduler`` at ``num_inference_steps``, from a fresh copy (the original is untouched)."""
    if not hasattr(scheduler, "get_scalings_for_boundary_condition_discrete"):
        raise ValueError(f"rnri needs an LCMScheduler, the pipeline has {type(scheduler).__name__}")
    config = scheduler.config
    if config.prediction_type != "epsilon" or config.thresholding or config.clip_sample:
        raise ValueError("rnri supports LCMScheduler with prediction_type='epsilon' and no clipping or thresholding")
    scheduler = type(scheduler).from_config(config)
    scheduler.set_timesteps(num_inference_steps)
    timesteps = [int(t) for t in scheduler.timesteps]
    acp = scheduler.alphas_cumprod
    steps = []
    for i, t in enumerate(timesteps):
        is_last = i == len(timesteps) - 1
        c_skip, c_out = scheduler.get_scalings_for_boundary_condition_discrete(t)
        abar_next = 1.0 if is_last else float(acp[timesteps[i + 1]])
        steps.append(Step(t, float(acp[t]), abar_next, float(c_skip), float(c_out), is_last))
    return steps


_PROMPT_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # text encoder -> {prompt: embeddings}
PROMPT_CACHE_SIZE = 32  # prompts kept per text encoder


def encode_prompt(pipe: LatentConsistencyModelPipeline, prompt: str) -> torch.Tensor:
    """Text embeddings (1, L, E) of ``prompt``, cached per text encoder (least recently used dropped)."""
    cache = _PROMPT_CACHE.setdefault(pipe.text_encoder, OrderedDict())
    if prompt in cache:
        cache.move_to_end(prompt)
        return cache[prompt]
    with torch.no_grad():
        embeds, _ = pipe.encode_prompt(prompt, pipe._execution_device, 1, False)
    cache[prompt] = embeds
    while len(cache) > PROMPT_CACHE_SIZE:
        cache.popitem(last=False)
    return embeds


def prompt_overflow(pipe: LatentConsistencyModelPipeline, prompt: str) -> int:
    """How many of ``prompt``'s tokens the text encoder cannot take (0 when it fits)."""
    tokens = pipe.tokenizer(prompt, truncation=False).input_ids
    return max(0, len(tokens) - pipe.tokenizer.model_max_length)


def guidance_embedding(pipe: LatentConsistencyModelPipeline, guidance_scale: float) -> torch.Tensor:
    """LCM's guidance embedding ``w_emb`` (1, time_cond_proj_dim), exactly as the stock pipeline makes it."""
    w = torch.tensor(guidance_scale - 1.0).repeat(1)
    w_emb = pipe.get_guidance_scale_embedding(w, embedding_dim=pipe.unet.config.time_cond_proj_dim)
    return w_emb.to(device=pipe._execution_device, dtype=pipe.unet.dtype)


def unet_eps_fn(pipe: LatentConsistencyModelPipeline, prompt_embeds: torch.Tensor, w_emb: torch.Tensor) -> EpsFn:
    """``eps(z, t)`` of the pipeline's UNet with prompt and guidance fixed; float32 in and out."""
    unet = pipe.unet

    def eps_fn(z: torch.Tensor, t: int) -> torch.Tensor:
        timestep = torch.tensor(t, device=z.device)
        out = unet(
            z.to(unet.dtype), timestep, timestep_cond=w_emb, encoder_hidden_states=prompt_embeds, return_dict=False
        )[0]
        return out.float()

    return eps_fn


def stock_noises(
    pipe: LatentConsistencyModelPipeline, shape: tuple[int, ...], seed: int, num_inference_steps: int
) -> list[torch.Tensor]:
    """The n_i a stock ``pipe(..., latents=..., generator=Generator().manual_seed(seed))`` call draws, in order."""
    generator = torch.Generator().manual_seed(seed)
    device, dtype = pipe._execution_device, pipe.unet.dtype
    return [
        randn_tensor(shape, generator=generator, device=device, dtype=dtype).float()
        for _ in range(num_inference_steps - 1)
    ]


@torch.no_grad()
def encode_image(pipe: LatentConsistencyModelPipeline, image: Image.Image) -> torch.Tensor:
    """Deterministic latents (1, 4, H/8, W/8) of an RGB image: the posterior mean times the VAE scaling factor."""
    pixels = pipe.image_processor.preprocess(image).to(device=pipe._execution_device, dtype=pipe.vae.dtype)
    latents = pipe.vae.encode(pixels).latent_dist.mean * pipe.vae.config.scaling_factor
    return latents.float().contiguous()  # conv outputs can come channels-last; a saved inversion loads contiguous


@torch.no_grad()
def decode_latents(pipe: LatentConsistencyModelPipeline, latents: torch.Tensor) -> Image.Image:
    """The RGB image of clean latents (1, 4, h, w); runs the pipeline's safety checker when it has one."""
    pixels = pipe.vae.decode(latents.to(pipe.vae.dtype) / pipe.vae.config.scaling_factor, return_dict=False)[0]
    pixels, nsfw = pipe.run_safety_checker(pixels, pipe._execution_device, pipe.unet.dtype)
    if nsfw is not None and any(nsfw):
        warnings.warn("the safety checker flagged this image; it was replaced by a black image", stacklevel=3)
    do_denormalize = [not flag for flag in nsfw] if nsfw is not None else None
    return pipe.image_processor.postprocess(pixels, output_type="pil", do_denormalize=do_denormalize)[0]
