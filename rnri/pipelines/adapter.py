"""Turning a stock diffusers pipeline into the step maps and noise predictor of the math layer.

Pipelines: ``LatentConsistencyModelPipeline``, ``StableDiffusionPipeline``, ``StableDiffusionXLPipeline`` and
``FluxPipeline`` (as ``from_pretrained`` or ``AutoPipelineForText2Image`` make them). The chain family follows from the
scheduler (:data:`SCHEDULER_CHAINS`); guidance from the UNet: an LCM guidance embedding where the UNet takes one
(``time_cond_proj_dim``), else classifier-free guidance with both branches in one batched call. FLUX's transformer
(its packed latents, its two text encoders, its embedded guidance) is adapted in :mod:`rnri.pipelines.flux`;
everything here that depends on the denoiser asks :func:`denoiser`.

Why one module of ~500 lines: encoding, the denoiser call and the step maps of every chain family share the
pipeline's private conventions (scaling, guidance batching, conditioning), which split apart would be read in two
places.
"""

from __future__ import annotations

import warnings
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from diffusers import (
    DDIMScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    FluxPipeline,
    LatentConsistencyModelPipeline,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
)
from diffusers.schedulers import LCMScheduler
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image

from rnri.core.chain import DDIMStep, EpsFn, EulerStep, LCMStep, Step
from rnri.core.samplers.euler import ancestral_sigmas
from rnri.core.samplers.vp import eps_from_v
from rnri.pipelines import flux

PIPELINES = (LatentConsistencyModelPipeline, StableDiffusionPipeline, StableDiffusionXLPipeline, FluxPipeline)
PREDICTION_TYPES = ("epsilon", "v_prediction")  # v is turned into eps before the chain sees it


def check_pipeline(pipe: Any) -> None:
    """``ValueError`` naming what rnri runs on unless ``pipe`` is one of :data:`PIPELINES` (or a subclass)."""
    if not isinstance(pipe, PIPELINES):
        names = ", ".join(p.__name__ for p in PIPELINES)
        raise ValueError(f"rnri runs on {names} (or AutoPipelineForText2Image of those); got {type(pipe).__name__}")


def denoiser(pipe: Any) -> torch.nn.Module:
    """The network every step evaluates: the UNet, or FLUX's transformer (what hooks count and what is timed)."""
    return pipe.transformer if flux.is_flux(pipe) else pipe.unet


def latent_channels(pipe: Any) -> int:
    """Channels of the latents rnri takes and gives, (B, C, h, w): 4 for Stable Diffusion's VAE, 16 for FLUX's."""
    return pipe.transformer.config.in_channels // flux.PATCH**2 if flux.is_flux(pipe) else pipe.unet.config.in_channels


def pixel_multiple(pipe: Any) -> int:
    """Image sides must be multiples of this: the VAE's factor (8), times FLUX's 2x2 patches (16)."""
    return pipe.image_processor.config.vae_scale_factor


def latent_multiple(pipe: Any) -> int:
    """Latent sides must be multiples of this: 1, or 2 for FLUX's 2x2 patches."""
    return pixel_multiple(pipe) // pipe.vae_scale_factor


# --- chains: the step maps of each scheduler -----------------------------------------------------------------


def _fresh(scheduler: Any, num_inference_steps: int) -> Any:
    """A copy of ``scheduler`` set to ``num_inference_steps`` (the original is untouched), after checking it."""
    config = scheduler.config
    if config.prediction_type not in PREDICTION_TYPES:
        raise ValueError(
            f"rnri supports prediction_type {PREDICTION_TYPES}, the scheduler has {config.prediction_type!r}"
        )
    if config.get("thresholding") or config.get("clip_sample"):
        raise ValueError("rnri supports schedulers without clipping or thresholding (clip_sample=False)")
    scheduler = type(scheduler).from_config(config)
    scheduler.set_timesteps(num_inference_steps)
    return scheduler


def _timesteps(scheduler: Any) -> list[int]:
    """The schedule's timesteps as integers; ``ValueError`` where they are fractional."""
    values = [float(t) for t in scheduler.timesteps]
    if any(v != int(v) for v in values):
        raise ValueError(
            f"rnri needs integer timesteps; this schedule has {values} (use timestep_spacing='trailing' or 'leading')"
        )
    return [int(v) for v in values]


def lcm_steps(scheduler: LCMScheduler, num_inference_steps: int) -> list[LCMStep]:
    """The step maps of an ``LCMScheduler`` at ``num_inference_steps``."""
    if not hasattr(scheduler, "get_scalings_for_boundary_condition_discrete"):
        raise ValueError(f"rnri needs an LCMScheduler here, the pipeline has {type(scheduler).__name__}")
    scheduler = _fresh(scheduler, num_inference_steps)
    timesteps = _timesteps(scheduler)
    acp = scheduler.alphas_cumprod
    steps = []
    for i, t in enumerate(timesteps):
        is_last = i == len(timesteps) - 1
        c_skip, c_out = scheduler.get_scalings_for_boundary_condition_discrete(t)
        abar_next = 1.0 if is_last else float(acp[timesteps[i + 1]])
        steps.append(LCMStep(t, float(acp[t]), abar_next, float(c_skip), float(c_out), is_last))
    return steps


def ddim_steps(scheduler: DDIMScheduler, num_inference_steps: int) -> list[DDIMStep]:
    """The deterministic (eta = 0) steps of a ``DDIMScheduler``, with its own ``abar_prev`` rule."""
    scheduler = _fresh(scheduler, num_inference_steps)
    timesteps = _timesteps(scheduler)
    acp, stride = scheduler.alphas_cumprod, scheduler.config.num_train_timesteps // num_inference_steps
    steps = []
    for i, t in enumerate(timesteps):
        prev = t - stride  # DDIMScheduler.step's "previous timestep"
        abar_prev = float(acp[prev]) if prev >= 0 else float(scheduler.final_alpha_cumprod)
        steps.append(DDIMStep(t, float(acp[t]), abar_prev, i == len(timesteps) - 1))
    return steps


def _sigma_steps(scheduler: Any, n: int, sigma_up: Callable[[float, float], float]) -> list[EulerStep]:
    """The steps of an Euler-family scheduler on its own sigmas; ``sigma_up(sigma, sigma_next)`` is the noise."""
    scheduler = _fresh(scheduler, n)
    timesteps, sigmas = _timesteps(scheduler), [float(s) for s in scheduler.sigmas]
    if sigmas[-1] != 0.0:
        raise ValueError("rnri needs an Euler schedule that ends at sigma 0 (final_sigmas_type='zero')")
    return [
        EulerStep(t, sigmas[i], sigmas[i + 1], sigma_up(sigmas[i], sigmas[i + 1]), i == len(timesteps) - 1)
        for i, t in enumerate(timesteps)
    ]


def euler_steps(scheduler: EulerDiscreteScheduler, num_inference_steps: int) -> list[EulerStep]:
    """The steps of an ``EulerDiscreteScheduler`` (no noise injected: ``sigma_up = 0``)."""
    return _sigma_steps(scheduler, num_inference_steps, lambda sigma, sigma_next: 0.0)


def euler_ancestral_steps(scheduler: EulerAncestralDiscreteScheduler, num_inference_steps: int) -> list[EulerStep]:
    """The steps of an ``EulerAncestralDiscreteScheduler`` (eta = 1, as it draws)."""
    return _sigma_steps(
        scheduler, num_inference_steps, lambda sigma, sigma_next: ancestral_sigmas(sigma, sigma_next)[0]
    )


def _any_size(make_steps: Callable[[Any, int], list[Step]]) -> Callable[..., list[Step]]:
    """``make_steps`` of a schedule that is the same at every image size (all but FLUX's dynamic shift)."""
    return lambda scheduler, num_inference_steps, latent_size=None: make_steps(scheduler, num_inference_steps)


@dataclass(frozen=True)
class ChainSpec:
    """A chain that a scheduler can run, as rnri step maps."""

    name: str  # the name ``rnri.invert(chain=...)`` takes and an ``Inversion`` records
    make_steps: Callable[..., list[Step]]  # (scheduler, num_inference_steps, latent_size=None) -> its step maps;
    # latent_size (h, w) matters only where the schedule shifts with the image's size (FLUX.1-dev)
    stochastic: bool  # injects the stock scheduler's noise draws, stored with the inversion
    corrects_noise: bool = True  # its steps inject noise that noise correction can re-solve


# Per scheduler, the chains it runs; the first is the one the stock pipeline runs (and replays).
SCHEDULER_CHAINS: dict[type, tuple[ChainSpec, ...]] = {
    LCMScheduler: (ChainSpec("lcm", _any_size(lcm_steps), True), ChainSpec("ddim", _any_size(lcm_steps), False)),
    DDIMScheduler: (ChainSpec("ddim", _any_size(ddim_steps), False),),
    EulerAncestralDiscreteScheduler: (
        ChainSpec("euler-ancestral", _any_size(euler_ancestral_steps), True),
        ChainSpec("euler", _any_size(euler_ancestral_steps), False),
    ),
    EulerDiscreteScheduler: (ChainSpec("euler", _any_size(euler_steps), False, corrects_noise=False),),
    FlowMatchEulerDiscreteScheduler: (ChainSpec("flow", flux.flow_steps, False),),  # noise correction: samplers/flow
}
CHAINS = tuple(dict.fromkeys(spec.name for specs in SCHEDULER_CHAINS.values() for spec in specs))


def scheduler_chains(scheduler: Any) -> tuple[ChainSpec, ...]:
    """The chains ``scheduler`` runs, the stock one first; ``ValueError`` naming the supported schedulers."""
    specs = SCHEDULER_CHAINS.get(type(scheduler))
    if specs is None:
        names = ", ".join(s.__name__ for s in SCHEDULER_CHAINS)
        raise ValueError(
            f"rnri runs on {names}; this pipeline has {type(scheduler).__name__}. For Stable Diffusion set "
            "pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config) (LCMScheduler with an LCM-LoRA)"
        )
    return specs


def chain_spec(scheduler: Any, chain: str | None) -> ChainSpec:
    """The chain called ``chain`` of ``scheduler`` (None: the stock one); ``ValueError`` naming the ones it runs."""
    specs = scheduler_chains(scheduler)
    if chain is None:
        return specs[0]
    for spec in specs:
        if spec.name == chain:
            return spec
    names = [s.name for s in specs]
    raise ValueError(f"chain must be one of {names} with {type(scheduler).__name__}, got {chain!r}")


def is_stock_chain(scheduler: Any, chain: str) -> bool:
    """Whether the stock pipeline runs ``chain`` with this scheduler (and so can replay an inversion on it)."""
    return scheduler_chains(scheduler)[0].name == chain


def stock_noises(pipe: Any, shape: tuple[int, ...], seed: int, num_inference_steps: int) -> list[torch.Tensor]:
    """The n_i a stock ``pipe(..., latents=..., generator=Generator().manual_seed(seed))`` call draws, in order.

    LCM and Euler-ancestral schedulers both draw ``randn_tensor(shape, generator)`` once per step in the UNet's
    dtype; the last step's draw (LCM: none; Euler ancestral: one scaled by ``sigma_up = 0``) is never used.
    """
    generator = torch.Generator().manual_seed(seed)
    device, dtype = pipe._execution_device, denoiser(pipe).dtype
    return [
        randn_tensor(shape, generator=generator, device=device, dtype=dtype).float()
        for _ in range(num_inference_steps - 1)
    ]


def batch_noises(pipe: Any, shape: tuple[int, ...], seeds: list[int], num_inference_steps: int) -> list[torch.Tensor]:
    """The n_i of a batch, one seed per item: item b's noises are :func:`stock_noises` of ``seeds[b]`` (``shape`` is
    one item's, (1, C, h, w)), as a stock pipeline draws them from a list of generators, one per image."""
    per_item = [stock_noises(pipe, shape, seed, num_inference_steps) for seed in seeds]
    return [torch.cat(draws) for draws in zip(*per_item)] if len(seeds) > 1 else per_item[0]


def latents_scale(scheduler: Any, num_inference_steps: int) -> float:
    """``z_T = scale * latents``, where ``latents`` is what a stock pipeline takes as ``latents=``.

    The stock pipeline starts its scheduler at ``init_noise_sigma * latents`` and gives the UNet
    ``scale_model_input`` of that: 1 on LCM and DDIM schedules, ``sigma_max / sqrt(1 + sigma_0^2)`` (or 1) on Euler's;
    1 on a flow (FLUX starts at ``latents`` itself).
    """
    if isinstance(scheduler, FlowMatchEulerDiscreteScheduler):
        return 1.0
    scheduler = _fresh(scheduler, num_inference_steps)
    start = torch.tensor(1.0) * scheduler.init_noise_sigma
    return float(scheduler.scale_model_input(start, scheduler.timesteps[0]))


# --- prompts and guidance --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PromptEmbeddings:
    """A prompt encoded by the pipeline's text encoder(s); the negative ones are the negative prompt's (by default
    the empty prompt's)."""

    text: torch.Tensor  # encoder hidden states (1, L, E)
    negative: torch.Tensor | None = None  # (1, L, E), under classifier-free guidance
    pooled: torch.Tensor | None = None  # (1, P), SDXL's pooled embedding of its second text encoder
    negative_pooled: torch.Tensor | None = None


_PROMPT_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # text encoder -> {(prompt, cfg): embeddings}
PROMPT_CACHE_SIZE = 32  # prompts kept per text encoder


def prompt_embeddings(
    pipe: Any, prompt: str, negative: bool = False, negative_prompt: str | None = None
) -> PromptEmbeddings:
    """``prompt`` (and with ``negative``, ``negative_prompt``, else the empty prompt) through the pipeline's own
    ``encode_prompt``, cached per text encoder (least recently used dropped)."""
    cache = _PROMPT_CACHE.setdefault(pipe.text_encoder, OrderedDict())
    negative_prompt = (negative_prompt or None) if negative else None  # "": the stock unconditional branch
    key = (prompt, negative, negative_prompt)
    if key in cache:
        cache.move_to_end(key)
        return cache[key]
    options = {"device": pipe._execution_device, "num_images_per_prompt": 1}
    with torch.no_grad():
        if flux.is_flux(pipe):  # T5's hidden states, CLIP's pooled embedding (and zero text ids, made again later)
            text, pooled, _ = pipe.encode_prompt(prompt, max_sequence_length=max_sequence_length(pipe), **options)
            encoded = (text, None, pooled)
        else:  # SD and LCM: 2 tensors; SDXL: 4, the pooled ones added (zeros for no negative prompt)
            cfg = {"do_classifier_free_guidance": negative, "negative_prompt": negative_prompt}
            encoded = pipe.encode_prompt(prompt, **cfg, **options)
    cache[key] = PromptEmbeddings(*encoded)  # the negatives are None without guidance
    while len(cache) > PROMPT_CACHE_SIZE:
        cache.popitem(last=False)
    return cache[key]


def encode_prompt(pipe: Any, prompt: str) -> torch.Tensor:
    """Text embeddings (1, L, E) of ``prompt``, cached per text encoder."""
    return prompt_embeddings(pipe, prompt).text


def max_sequence_length(pipe: Any) -> int:
    """The T5 tokens a FLUX prompt is padded (and cut) to: the backbone's (schnell 256, dev 512)."""
    from rnri.pipelines.backbones import backbone_of  # backbones asks this module what a pipeline is

    return backbone_of(pipe).max_sequence_length


def prompt_overflow(pipe: Any, prompt: str) -> int:
    """How many of ``prompt``'s tokens the text encoder cannot take (0 when it fits); FLUX's is T5's."""
    if flux.is_flux(pipe):
        return max(0, len(pipe.tokenizer_2(prompt, truncation=False).input_ids) - max_sequence_length(pipe))
    tokens = pipe.tokenizer(prompt, truncation=False).input_ids
    return max(0, len(tokens) - pipe.tokenizer.model_max_length)


def guidance_embedding(pipe: Any, guidance_scale: float) -> torch.Tensor:
    """LCM's guidance embedding ``w_emb`` (1, time_cond_proj_dim), exactly as the stock pipeline makes it."""
    w = torch.tensor(guidance_scale - 1.0).repeat(1)
    w_emb = pipe.get_guidance_scale_embedding(w, embedding_dim=pipe.unet.config.time_cond_proj_dim)
    return w_emb.to(device=pipe._execution_device, dtype=pipe.unet.dtype)


def embeds_guidance(pipe: Any) -> bool:
    """Whether the UNet takes guidance as an LCM's embedding; otherwise guidance is classifier-free (False for FLUX,
    whose transformer has its own kind of guidance embedding, :func:`rnri.pipelines.flux.embedded_guidance`)."""
    return not flux.is_flux(pipe) and pipe.unet.config.time_cond_proj_dim is not None


@dataclass(frozen=True)
class Conditioning:
    """Everything the UNet sees besides z and t; the batch is [unconditional, conditional] under CFG."""

    text: torch.Tensor  # encoder hidden states (B, L, E)
    added: dict[str, torch.Tensor] | None = None  # SDXL: {"text_embeds": (B, P), "time_ids": (B, 6)}
    timestep_cond: torch.Tensor | None = None  # LCM's guidance embedding (1, D)
    cfg_scale: float | None = None  # w of classifier-free guidance (B = 2), None without it (B = 1)


def sdxl_time_ids(pipe: Any, latent_size: tuple[int, int], dtype: torch.dtype) -> torch.Tensor:
    """SDXL's micro-conditioning (1, 6): original size, crop corner (0, 0), target size, all the image's size."""
    height, width = (side * pipe.vae_scale_factor for side in latent_size)
    return torch.tensor([[height, width, 0, 0, height, width]], dtype=dtype, device=pipe._execution_device)


def conditioning(
    pipe: Any, prompt: str, guidance_scale: float, latent_size: tuple[int, int], negative_prompt: str | None = None
) -> Conditioning:
    """The UNet's conditioning for ``prompt`` at ``guidance_scale``, for latents of ``latent_size = (h, w)``.

    As the stock pipelines: an LCM's guidance goes in its embedding; otherwise classifier-free guidance is on when
    ``guidance_scale > 1``, against ``negative_prompt`` in the unconditional branch, else the empty prompt (zeros on
    SDXL, whose config forces them). Where there is no unconditional branch the negative prompt is the caller's to
    refuse (``rnri.support.negative_prompt_support``).
    """
    if embeds_guidance(pipe):
        return Conditioning(encode_prompt(pipe, prompt), timestep_cond=guidance_embedding(pipe, guidance_scale))
    cfg = guidance_scale > 1.0
    e = prompt_embeddings(pipe, prompt, negative=cfg, negative_prompt=negative_prompt)
    text = torch.cat([e.negative, e.text]) if cfg else e.text
    added = None
    if e.pooled is not None:
        pooled = torch.cat([e.negative_pooled, e.pooled]) if cfg else e.pooled
        time_ids = sdxl_time_ids(pipe, latent_size, text.dtype).repeat(len(pooled), 1)
        added = {"text_embeds": pooled, "time_ids": time_ids}
    return Conditioning(text, added, None, guidance_scale if cfg else None)


def batch_conditioning(
    pipe: Any,
    prompts: list[str],
    guidance_scale: float,
    latent_size: tuple[int, int],
    negative_prompt: str | None = None,
) -> Conditioning:
    """The conditioning of a batch, one prompt per item in order (one prompt's is :func:`conditioning`'s own).

    Under classifier-free guidance the batch is [every item unconditional, every item conditional], the halves
    :func:`unet_eps` splits; the guidance embedding (1, D), the same for every item, broadcasts over the batch.
    """
    conds = [conditioning(pipe, prompt, guidance_scale, latent_size, negative_prompt) for prompt in prompts]
    if len(conds) == 1:
        return conds[0]
    halves = 2 if conds[0].cfg_scale is not None else 1

    def stack(parts: list[torch.Tensor]) -> torch.Tensor:
        chunks = [part.chunk(halves) for part in parts]
        return torch.cat([c[half] for half in range(halves) for c in chunks])

    added = None if conds[0].added is None else {k: stack([c.added[k] for c in conds]) for k in conds[0].added}
    return Conditioning(stack([c.text for c in conds]), added, conds[0].timestep_cond, conds[0].cfg_scale)


def unet_eps(pipe: Any, cond: Conditioning) -> EpsFn:
    """``eps(z, t)`` of the pipeline's UNet under ``cond``; float32 in and out.

    Classifier-free guidance (Ho & Salimans 2022): ``eps = eps_u + w (eps_c - eps_u)``, both branches in one batch.
    A v-prediction UNet's output is turned into eps, so every chain sees eps.
    """
    unet, to_eps = pipe.unet, _to_eps(pipe.scheduler)

    def eps_fn(z: torch.Tensor, t: int) -> torch.Tensor:
        batch = torch.cat([z, z]) if cond.cfg_scale is not None else z
        out = unet(
            batch.to(unet.dtype),
            torch.tensor(t, device=z.device),
            encoder_hidden_states=cond.text,
            timestep_cond=cond.timestep_cond,
            added_cond_kwargs=cond.added,
            return_dict=False,
        )[0].float()
        if cond.cfg_scale is not None:
            eps_u, eps_c = out.chunk(2)
            out = eps_u + cond.cfg_scale * (eps_c - eps_u)
        return to_eps(out, z, t)

    return eps_fn


def _to_eps(scheduler: Any) -> Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]:
    """The map from the UNet's output to eps: the identity, or ``eps = sqrt(abar_t) v + sqrt(1 - abar_t) z``."""
    if scheduler.config.prediction_type != "v_prediction":
        return lambda out, z, t: out
    acp = scheduler.alphas_cumprod
    return lambda v, z, t: eps_from_v(v, z, float(acp[t]))


def prompt_eps_fn(
    pipe: Any,
    prompt: str | list[str],
    guidance_scale: float,
    latent_size: tuple[int, int],
    negative_prompt: str | None = None,
) -> EpsFn:
    """``eps(z, t)`` under ``prompt`` at ``guidance_scale`` for latents of ``latent_size = (h, w)``; a list of
    prompts conditions a batch, item by item; ``negative_prompt``: CFG's unconditional branch (None: the empty one).
    On FLUX, the velocity ``v(z, t)`` that the flow chain steps with."""
    if flux.is_flux(pipe):
        return flux.velocity_fn(pipe, flux_conditioning(pipe, prompt, guidance_scale), latent_size)
    if isinstance(prompt, str):
        return unet_eps(pipe, conditioning(pipe, prompt, guidance_scale, latent_size, negative_prompt))
    return unet_eps(pipe, batch_conditioning(pipe, prompt, guidance_scale, latent_size, negative_prompt))


def flux_conditioning(pipe: Any, prompt: str | list[str], guidance_scale: float) -> flux.FluxConditioning:
    """FLUX's conditioning for a prompt, or a batch's prompts item by item (each padded to one length)."""
    guidance = flux.embedded_guidance(pipe, guidance_scale)
    encoded = [prompt_embeddings(pipe, text) for text in ([prompt] if isinstance(prompt, str) else prompt)]
    return flux.FluxConditioning(
        torch.cat([e.text for e in encoded]), torch.cat([e.pooled for e in encoded]), guidance
    )


def unet_eps_fn(pipe: Any, prompt_embeds: torch.Tensor, w_emb: torch.Tensor | None) -> EpsFn:
    """``eps(z, t)`` with prompt embeddings (1, L, E) and an LCM guidance embedding fixed; float32 in and out."""
    return unet_eps(pipe, Conditioning(prompt_embeds, timestep_cond=w_emb))


# --- images ------------------------------------------------------------------------------------------------------


@contextmanager
def _vae_precision(pipe: Any) -> Iterator[torch.dtype]:
    """An SDXL pipeline's VAE in float32 meanwhile where it is fp16 and its config asks for upcasting, as the stock
    SDXL pipeline does (SDXL's VAE overflows in fp16; SD 1.5's does not, and its pipelines never upcast)."""
    vae = pipe.vae
    upcast = isinstance(pipe, StableDiffusionXLPipeline) and vae.dtype == torch.float16 and vae.config.force_upcast
    if upcast:
        vae.to(torch.float32)
    try:
        yield vae.dtype
    finally:
        if upcast:
            vae.to(torch.float16)


def _vae_shift(pipe: Any) -> float:
    """The VAE's ``shift_factor``: FLUX's latents are centred on it before scaling; 0 for Stable Diffusion's."""
    return pipe.vae.config.get("shift_factor") or 0.0


@torch.no_grad()
def encode_image(pipe: Any, image: Image.Image) -> torch.Tensor:
    """Deterministic latents (1, C, H/8, W/8) of an RGB image: the posterior mean, less the VAE's shift factor
    (FLUX's), times its scaling factor."""
    with _vae_precision(pipe) as dtype:
        pixels = pipe.image_processor.preprocess(image).to(device=pipe._execution_device, dtype=dtype)
        mean = pipe.vae.encode(pixels).latent_dist.mean
        latents = (mean - _vae_shift(pipe)) * pipe.vae.config.scaling_factor
    return latents.float().contiguous()  # conv outputs can come channels-last; a saved inversion loads contiguous


@torch.no_grad()
def decode_latents(pipe: Any, latents: torch.Tensor) -> Image.Image:
    """The RGB image of clean latents (1, C, h, w); runs the pipeline's safety checker when it has one.
    ``ValueError`` where the decoded pixels are not all finite."""
    with _vae_precision(pipe) as dtype:
        unscaled = latents.to(dtype) / pipe.vae.config.scaling_factor + _vae_shift(pipe)
        pixels = pipe.vae.decode(unscaled, return_dict=False)[0]
    if not torch.isfinite(pixels).all():  # postprocessing would write them as black pixels, silently
        raise ValueError("the decoded image has NaN or infinite values (the chain diverged); no image was made")
    nsfw = None
    if getattr(pipe, "run_safety_checker", None) is not None:  # SD and LCM pipelines; SDXL has none
        pixels, nsfw = pipe.run_safety_checker(pixels, pipe._execution_device, pipe.unet.dtype)
    if nsfw is not None and any(nsfw):
        warnings.warn("the safety checker flagged this image; it was replaced by a black image", stacklevel=3)
    do_denormalize = [not flag for flag in nsfw] if nsfw is not None else None
    return pipe.image_processor.postprocess(pixels, output_type="pil", do_denormalize=do_denormalize)[0]


def native_resolution(pipe: Any) -> int:
    """The long side, in pixels, of the images the denoiser was built for (FLUX: its pipeline's default size)."""
    if flux.is_flux(pipe):
        return pipe.default_sample_size * pipe.vae_scale_factor
    size = pipe.unet.config.sample_size
    return (size if isinstance(size, int) else max(size)) * pipe.vae_scale_factor


def stock_latents(pipe: Any, latents: torch.Tensor) -> torch.Tensor:
    """A start latent (B, C, h, w) in the form the stock pipeline takes as ``latents=``: FLUX's packed into 2x2
    patches, (B, h w / 4, 4 C); every other pipeline's as it is."""
    return flux.stock_latents(latents) if flux.is_flux(pipe) else latents
