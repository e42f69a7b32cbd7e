"""The public API: ``invert`` a photo on a stock diffusers pipeline, ``regenerate`` it under any prompt
(docs/architecture.md, "Public API").

Pipelines: LCM (and LCM-LoRA), Stable Diffusion 1.5 / 2.x / SDXL with DDIM, SD-Turbo and SDXL-Turbo with Euler
schedulers, FLUX.1-schnell and -dev on their rectified flow; defaults per backbone in ``rnri.pipelines.backbones``.

Why one module of ~500 lines: the public API is read as one page (docs/architecture.md, "Public API"): ``invert``,
``regenerate`` and ``auto_mask`` with the checks they share.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import torch
from PIL import Image

from rnri.core.chain import Step, sample
from rnri.core.counting import count_unet_calls
from rnri.core.directions import Directions
from rnri.core.inversion import ProgressFn, invert_chain
from rnri.core.masks import (
    BlendConfig,
    blend_masks,
    blended_sample,
    fit_mask,
    latent_mask,
    noise_difference,
    threshold_mask,
)
from rnri.core.settings import InversionSettings, with_method, with_options
from rnri.pipelines import adapter
from rnri.pipelines.attention import AttentionControl
from rnri.pipelines.backbones import Backbone, backbone_of
from rnri.pipelines.control import edit_chain
from rnri.pipelines.images import fit_size, mask_image, mask_tensor, to_rgb
from rnri.support import negative_prompt_support, steering_support

CHAINS = adapter.CHAINS  # "lcm", "ddim", "euler-ancestral", "euler", "flow"; which a pipeline runs: its scheduler's
Pipeline = Any  # a stock LatentConsistencyModelPipeline, StableDiffusion(XL)Pipeline or FluxPipeline


@dataclass
class Inversion:
    """Everything regeneration needs, and what the inversion cost."""

    latents: torch.Tensor  # z_T, the start latent, (1, C, h, w), float32: as a stock pipeline takes it (latents=),
    # but FLUX's is unpacked (stock_latents packs it)
    noises: list[torch.Tensor | None]  # n_i per step; None where the step uses eps (deterministic) or is last
    timesteps: list[int] | list[float]  # the inverted steps' timesteps, noisiest first (a flow's: 1000 sigma)
    num_inference_steps: int  # the schedule the timesteps come from (more than len(timesteps) when strength < 1)
    guidance_scale: float
    method: str
    chain: str  # one of CHAINS: "lcm", "ddim", "euler-ancestral", "euler" or "flow"
    residuals: list[list[float]]  # per step (chain order), per iterate: ||S_i(z) - y|| / ||y||
    unet_forwards: int  # counted by hooks on the UNet (FLUX: the transformer); in a batch, the calls on the whole
    # batch (each item's evaluations)
    unet_backwards: int
    trajectory: list[torch.Tensor] = field(repr=False)  # the chain's latents [z_T, ..., clean], as the UNet sees them
    seed: int | None = None  # a stock pipeline call with this seed replays the chain; None when it cannot
    image_size: tuple[int, int] | None = None  # (width, height) of the input image; outputs are resized to it
    solver_options: dict[str, Any] = field(default_factory=dict)
    prompt: str = ""  # the source prompt the image was inverted under
    source_image: Image.Image | None = field(default=None, repr=False)  # the input as RGB, for paste-back
    fallbacks: list[str] = field(default_factory=list)  # one line per step where the method's answer was not finite
    # or left a larger residual than DDIM inversion's guess, which was taken instead (rnri.core.solvers.guard)

    @property
    def start_step(self) -> int:
        """Index of the first inverted step in the full schedule (0 unless strength < 1)."""
        return self.num_inference_steps - len(self.timesteps)


def _check_prompt(pipe: Pipeline, prompt: str, allow_empty: bool = False) -> None:
    """A prompt is a string, non-empty unless ``allow_empty`` (an inversion's: "" inverts unconditionally)."""
    if not isinstance(prompt, str):
        raise ValueError(f"prompt must be a string, got {type(prompt).__name__}")
    if not (prompt.strip() or allow_empty):
        raise ValueError("prompt must be a non-empty string")
    overflow = adapter.prompt_overflow(pipe, prompt)
    if overflow:
        warnings.warn(
            f"prompt is {overflow} token(s) longer than the text encoder takes; the end is ignored", stacklevel=3
        )


def _batch_prompts(prompt: str | Sequence[str]) -> list[str]:
    """The prompts of a batch (a list of str, one per item), or ``[prompt]``."""
    if isinstance(prompt, str):
        return [prompt]
    if not isinstance(prompt, Sequence) or not prompt:
        raise ValueError(f"prompt must be a string, or a non-empty list of them for a batch; got {prompt!r}")
    return list(prompt)


def _batch_seeds(seed: int | Sequence[int], items: int) -> list[int]:
    """One seed per item: ``seed`` for every item, or a list of ``items`` seeds."""
    seeds = [seed] * items if isinstance(seed, int) else list(seed) if isinstance(seed, Sequence) else [seed]
    if len(seeds) != items or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise ValueError(f"seed must be an integer or a list of {items} integers (one per prompt), got {seed!r}")
    return seeds


def _start_latents(
    pipe: Pipeline, image: Any, latents: torch.Tensor | None, resolution: int, items: int | None
) -> tuple[torch.Tensor, list[Image.Image | None]]:
    """z0 (B, C, h, w) and each item's input as RGB (None for latents); ``items``: a batch's size, None for one."""
    if (image is None) == (latents is None):
        raise ValueError("give exactly one of image= or latents=")
    if latents is not None:
        size, channels, multiple = (
            1 if items is None else items,
            adapter.latent_channels(pipe),
            adapter.latent_multiple(pipe),
        )
        if not isinstance(latents, torch.Tensor) or latents.ndim != 4 or latents.shape[:2] != (size, channels):
            shape = tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__
            raise ValueError(f"latents must be a tensor of shape ({size}, {channels}, h, w), got {shape}")
        if latents.shape[-2] % multiple or latents.shape[-1] % multiple:
            raise ValueError(f"latents' h and w must be multiples of {multiple} here, got {tuple(latents.shape)}")
        if not torch.isfinite(latents).all():
            raise ValueError("latents contain NaN or infinite values")
        return latents.to(device=pipe._execution_device, dtype=torch.float32), [None] * size
    images = [image] if items is None else _batch_images(image, items)
    for im in images:
        if not isinstance(im, Image.Image):
            hint = " (a batch takes a list of prompts, one per image)" if isinstance(im, list | tuple) else ""
            raise ValueError(f"image must be a PIL image, got {type(im).__name__}{hint}")
    rgbs = [to_rgb(im) for im in images]
    fit = [
        rgb.resize(fit_size(*rgb.size, resolution, adapter.pixel_multiple(pipe)), Image.Resampling.LANCZOS)
        for rgb in rgbs
    ]
    if len({im.size for im in fit}) > 1:
        sizes = sorted({im.size for im in fit})
        raise ValueError(f"a batch's images must fit to one size (one aspect ratio); these fit to {sizes}")
    return torch.cat([adapter.encode_image(pipe, im) for im in fit]), rgbs


def _batch_images(image: Any, items: int) -> list[Any]:
    if isinstance(image, Image.Image) or not isinstance(image, Sequence) or len(image) != items:
        raise ValueError(f"a batch takes a list of {items} images, one per prompt, or latents ({items}, C, h, w)")
    return list(image)


def invert(
    pipe: Pipeline,
    prompt: str | Sequence[str],
    *,
    image: Image.Image | Sequence[Image.Image] | None = None,
    latents: torch.Tensor | None = None,
    settings: InversionSettings | None = None,
    method: str = "ddim",
    num_inference_steps: int | None = None,
    guidance_scale: float | None = None,
    seed: int | Sequence[int] = 0,
    chain: str | None = None,
    strength: float = 1.0,
    noise_correction: bool | None = None,
    resolution: int | None = None,
    callback: ProgressFn | None = None,
    **solver_options: Any,
) -> Inversion | list[Inversion]:
    """Find the start latent (and noises) from which ``pipe`` regenerates ``image`` (or ``latents``) under ``prompt``
    ("" inverts unconditionally, as LEdits++ allows; a prompt that describes the image keeps more of it).

    image: a PIL image of any size and mode, fitted to ``resolution`` (default: the backbone's, else the model's
    native size) with the aspect ratio kept. latents: (1, C, h, w), already scaled by the VAE scaling factor
    (C = 4; FLUX: 16, unpacked, ``(mean - shift_factor) * scaling_factor``, h and w even).
    num_inference_steps and guidance_scale default to the backbone's (``rnri.backbone_of(pipe)``: LCM 4 and 8.5,
    Stable Diffusion 50 and 1, Turbo 4 and 0, FLUX.1-schnell 4 and 0, FLUX.1-dev 28 and 3.5). chain: one the
    scheduler runs (default: the stock pipeline's).
    strength in (0, 1]: the fraction of the chain to invert (the last steps). noise_correction: store the noises
    that make every step but the last exact (ReNoise's correction); None, the default: on where the chain injects
    noise (LCM, Euler ancestral), chosen on the ShapeEdit benchmark (docs/solver-choice.md). It gives up replay by
    the stock pipeline from the seed (``Inversion.replayable``); ``rnri.regenerate`` replays it exactly.
    ``solver_options`` go to the method. settings: all of these as one ``rnri.InversionSettings`` (then give none of
    the keywords), e.g. ``rnri.preset("paper")``.

    A batch: a list of prompts, one per item, with a list of as many images (fitting to one size) or latents
    (B, C, h, w), and one seed for every item or a list of them. Returns a list of Inversions, each the item's own
    single call's (to float tolerance): the items are solved together, every UNet call on the whole batch, and
    every step size and choice of the solver per item.
    """
    keywords = InversionSettings(
        method=method, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale, seed=seed,
        strength=strength, chain=chain, noise_correction=noise_correction, resolution=resolution,
    )  # fmt: skip
    if settings is None:
        settings, options = with_method(keywords, method, solver_options), dict(solver_options)  # built once
    elif keywords != InversionSettings() or solver_options:
        raise ValueError("give settings= or its keywords (method=, seed=, the method's options, ...), not both")
    else:
        settings = with_options(settings)
        options = {} if settings.solver is None else asdict(settings.solver)
    return _invert(pipe, prompt, image, latents, settings, options, callback)


def _invert(
    pipe: Pipeline,
    prompt: str | Sequence[str],
    image: Any,
    latents: torch.Tensor | None,
    settings: InversionSettings,
    options: dict[str, Any],
    callback: ProgressFn | None,
) -> Inversion | list[Inversion]:
    """``invert`` with its settings checked and the method's options built (``options``: as the caller gave them,
    kept in the Inversion)."""
    batch = not isinstance(prompt, str)
    prompts = _batch_prompts(prompt)
    seeds = _batch_seeds(settings.seed, len(prompts))
    backbone = backbone_of(pipe)
    steps_given = settings.num_inference_steps
    num_inference_steps = backbone.num_inference_steps if steps_given is None else steps_given
    guidance_scale = backbone.inversion_guidance_scale if settings.guidance_scale is None else settings.guidance_scale
    spec = adapter.chain_spec(pipe.scheduler, settings.chain)
    noise_correction = settings.noise_correction
    noise_correction = spec.stochastic and spec.corrects_noise if noise_correction is None else noise_correction
    if noise_correction and not spec.corrects_noise:
        raise ValueError(f"noise_correction needs a chain that injects noise; {spec.name!r} here injects none")
    for text in prompts:
        _check_prompt(pipe, text, allow_empty=True)
    resolution = _resolution(pipe, backbone, settings.resolution)
    z0, sources = _start_latents(pipe, image, latents, resolution, len(prompts) if batch else None)
    steps = spec.make_steps(pipe.scheduler, num_inference_steps, tuple(z0.shape[-2:]))
    start = num_inference_steps - max(1, round(settings.strength * num_inference_steps))
    shape = (1, *z0.shape[1:])
    draws = adapter.batch_noises(pipe, shape, seeds, num_inference_steps) if spec.stochastic else []
    noises = [draws[i] if draws and not s.is_last else None for i, s in enumerate(steps)][start:]
    eps_fn = adapter.prompt_eps_fn(pipe, prompts if batch else prompt, guidance_scale, tuple(z0.shape[-2:]))
    with count_unet_calls(adapter.denoiser(pipe)) as calls:
        result = invert_chain(
            eps_fn, steps[start:], z0, noises, settings.method, settings.solver, noise_correction, callback
        )
    replayable = adapter.is_stock_chain(pipe.scheduler, spec.name) and not noise_correction and start == 0
    scale = _latents_scale(pipe, num_inference_steps, start)
    inversions = []
    for b, (text, item_seed, source_image) in enumerate(zip(prompts, seeds, sources)):
        item = _item_of(b, len(prompts))
        trajectory = [item(z) for z in result.trajectory]
        inversions.append(
            Inversion(
                latents=trajectory[0] / scale,
                noises=[item(n) for n in result.noises],
                timesteps=[s.t for s in steps[start:]],
                num_inference_steps=num_inference_steps,
                guidance_scale=guidance_scale,
                method=settings.method,
                chain=spec.name,
                residuals=result.residuals[b],
                unet_forwards=calls.forwards,
                unet_backwards=calls.backwards,
                trajectory=trajectory,
                seed=item_seed if replayable else None,
                image_size=source_image.size if source_image else None,
                solver_options=options,
                prompt=text,
                source_image=source_image,
                fallbacks=result.fallbacks[b],
            )
        )
    return inversions if batch else inversions[0]


def _item_of(b: int, items: int) -> Callable[[torch.Tensor | None], torch.Tensor | None]:
    """Item ``b``'s slice (1, ...) of a batch's tensors, copied so that an item kept or saved alone holds no other's
    memory; a batch of one is its own item."""

    def item(x: torch.Tensor | None) -> torch.Tensor | None:
        return x if x is None or items == 1 else x[b : b + 1].clone()

    return item


def _resolution(pipe: Pipeline, backbone: Backbone, resolution: int | None) -> int:
    return resolution or backbone.resolution or adapter.native_resolution(pipe)


def _latents_scale(pipe: Pipeline, num_inference_steps: int, start: int) -> float:
    """``z_T / inv.latents``: the stock start scaling (Euler schedules) where the whole chain is inverted."""
    return adapter.latents_scale(pipe.scheduler, num_inference_steps) if start == 0 else 1.0


def _steps_of(pipe: Pipeline, inv: Inversion) -> list[Step]:
    spec = adapter.chain_spec(pipe.scheduler, inv.chain)
    steps = spec.make_steps(pipe.scheduler, inv.num_inference_steps, tuple(inv.latents.shape[-2:]))[inv.start_step :]
    if [s.t for s in steps] != inv.timesteps:
        raise ValueError(
            f"this pipeline's scheduler gives timesteps {[s.t for s in steps]}, "
            f"the inversion was made with {inv.timesteps}"
        )
    return steps


def _eps_fn(
    pipe: Pipeline,
    inv: Inversion,
    prompt: str | list[str],
    guidance_scale: float | None,
    negative_prompt: str | None = None,
):
    guidance_scale = inv.guidance_scale if guidance_scale is None else guidance_scale
    return adapter.prompt_eps_fn(pipe, prompt, guidance_scale, tuple(inv.latents.shape[-2:]), negative_prompt)


def _output_size(inv: Inversion, vae_scale_factor: int) -> tuple[int, int]:
    """(width, height) of regenerated images: the input's, or the latents' times the VAE factor."""
    return inv.image_size or (inv.latents.shape[-1] * vae_scale_factor, inv.latents.shape[-2] * vae_scale_factor)


def stock_latents(pipe: Pipeline, inv: Inversion) -> torch.Tensor:
    """What the stock pipeline takes as ``latents=`` to replay ``inv``: ``inv.latents`` as it is, but on FLUX packed
    into 2x2 patches, (1, h w / 4, 64)."""
    return adapter.stock_latents(pipe, inv.latents)


def on_device(inv: Inversion, device: torch.device | str) -> Inversion:
    """``inv`` with its tensors on ``device`` (an inversion loaded from a file, or made on another device)."""
    if all(z.device == torch.device(device) for z in [inv.latents, *inv.trajectory]):
        return inv

    def move(x: torch.Tensor | None) -> torch.Tensor | None:
        return None if x is None else x.to(device)

    return replace(
        inv,
        latents=move(inv.latents),
        noises=[move(n) for n in inv.noises],
        trajectory=[move(z) for z in inv.trajectory],
    )


@torch.no_grad()
def regenerate(
    pipe: Pipeline,
    inv: Inversion | Sequence[Inversion],
    prompt: str | Sequence[str],
    *,
    output_type: str = "pil",
    guidance_scale: float | None = None,
    mask: Image.Image | np.ndarray | torch.Tensor | str | None = None,
    blend: BlendConfig | None = None,
    control: AttentionControl | None = None,
    directions: Directions | None = None,
    negative_prompt: str | None = None,
) -> Image.Image | list[Image.Image] | torch.Tensor:
    """Run the inverted chain under ``prompt``: the source prompt reconstructs, another one edits.

    mask: where the edit may act (white / 1 / opaque), as an image, array or tensor of the input's aspect ratio,
    or ``"auto"`` (:func:`auto_mask`); outside it the source chain is followed, and with ``blend.paste_back``
    the original pixels are put back. control: reuse the source's attention (:mod:`rnri.pipelines.attention`; the
    source branch runs beside the edit in one batched UNet call). directions: several edits, or removals, at once
    (:mod:`rnri.core.directions`). negative_prompt: what the edit steers away from, in classifier-free guidance's
    unconditional branch instead of the empty prompt; only where the edit runs CFG (``ValueError`` with the reason
    elsewhere: :func:`rnri.support.negative_prompt_support`). Returns a PIL image at the input image's size, or with
    ``output_type="latent"`` the clean latents (1, C, h, w), scaled as ``invert`` takes them (FLUX's unpacked).

    A batch: a list of inversions (made on one chain, schedule, guidance and latent size, e.g. by one batched
    ``invert``) and a list of as many prompts; every UNet call takes the whole batch. Returns a list of images, or
    the clean latents (B, C, h, w). mask, control and directions take one inversion at a time.
    """
    if output_type not in ("pil", "latent"):
        raise ValueError(f"output_type must be 'pil' or 'latent', got {output_type!r}")
    if negative_prompt:
        _check_negative_prompt(pipe, inv, negative_prompt, guidance_scale)
    if not isinstance(inv, Inversion):
        if mask is not None or control is not None or directions is not None:
            raise ValueError("mask, control and directions take one inversion at a time, not a list")
        invs, prompts = _batch_of(inv, prompt)
        for text in prompts:
            _check_prompt(pipe, text, allow_empty=True)
        return _regenerate_batch(pipe, invs, prompts, output_type, guidance_scale, negative_prompt)
    _check_prompt(pipe, prompt, allow_empty=True)  # "": unconditional, as an inversion under "" is replayed
    if control is not None or directions is not None:
        support = steering_support(pipe)
        if not support.applies:
            raise ValueError(support.reason)
    if control is not None and not inv.prompt:
        raise ValueError("attention control needs the inversion's source prompt, which this inversion does not record")
    for term in directions.terms if directions is not None else ():
        _check_prompt(pipe, term.prompt)
    inv = on_device(inv, pipe._execution_device)
    steps = _steps_of(pipe, inv)
    size = _output_size(inv, pipe.vae_scale_factor)
    paste_mask = blend_mask = None
    if mask is not None:
        if isinstance(mask, str) and mask == "auto":
            mask = auto_mask(pipe, inv, prompt, guidance_scale=guidance_scale)
        soft_mask, paste_mask = blend_masks(fit_mask(mask_tensor(mask), size), blend or BlendConfig())
        blend_mask = latent_mask(soft_mask, tuple(inv.latents.shape[-2:])).to(inv.latents.device)
    if control is not None or directions is not None:
        w_emb = adapter.guidance_embedding(pipe, inv.guidance_scale if guidance_scale is None else guidance_scale)
        chain = edit_chain(
            pipe, steps, inv.trajectory, inv.noises, (inv.prompt, prompt), w_emb, control, directions, blend_mask
        )
        clean = chain[-1]
    elif blend_mask is None:
        clean = _sample_clean(pipe, [inv], prompt, guidance_scale, negative_prompt)
    else:
        eps_fn = _eps_fn(pipe, inv, prompt, guidance_scale, negative_prompt)
        clean = blended_sample(eps_fn, steps, inv.trajectory, inv.noises, blend_mask)[-1]
    if output_type == "latent":
        return clean
    image = _decode(pipe, clean, size)
    if paste_mask is not None and (blend or BlendConfig()).paste_back and inv.source_image is not None:
        image = Image.composite(image, inv.source_image, mask_image(paste_mask, size))  # m x + (1 - m) x_src
    return image


def _check_negative_prompt(
    pipe: Pipeline, inv: Inversion | Sequence[Inversion], negative_prompt: Any, guidance_scale: float | None
) -> None:
    """A negative prompt is a string, refused where the edit runs no classifier-free guidance."""
    if not isinstance(negative_prompt, str):
        raise ValueError(f"negative_prompt must be a string, got {type(negative_prompt).__name__}")
    first = inv if isinstance(inv, Inversion) else (inv[0] if inv else None)
    if guidance_scale is None and isinstance(first, Inversion):
        guidance_scale = first.guidance_scale
    support = negative_prompt_support(pipe, guidance_scale)
    if not support.applies:
        raise ValueError(support.reason)
    _check_prompt(pipe, negative_prompt)


def _batch_of(invs: Sequence[Inversion], prompts: str | Sequence[str]) -> tuple[list[Inversion], list[str]]:
    """A batch's inversions and prompts, checked to pair one to one and to run one chain together."""
    if isinstance(prompts, str) or not isinstance(prompts, Sequence) or len(prompts) != len(invs) or not invs:
        raise ValueError("a list of inversions takes a list of as many prompts, one per inversion")
    if not all(isinstance(inv, Inversion) for inv in invs):
        raise ValueError("inv must be an rnri.Inversion or a list of them")
    first = invs[0]
    for inv in invs[1:]:
        same = (inv.chain, inv.timesteps, inv.num_inference_steps, inv.guidance_scale, inv.latents.shape) == (
            first.chain,
            first.timesteps,
            first.num_inference_steps,
            first.guidance_scale,
            first.latents.shape,
        )
        if not same or [n is None for n in inv.noises] != [n is None for n in first.noises]:
            raise ValueError(
                "a batch's inversions must share their chain, timesteps, guidance, latent size and noise "
                "correction (as one batched invert makes them); regenerate the others apart"
            )
    return list(invs), list(prompts)


def _sample_clean(
    pipe: Pipeline,
    invs: list[Inversion],
    prompt: str | list[str],
    guidance_scale: float | None,
    negative_prompt: str | None = None,
) -> torch.Tensor:
    """The clean latents (B, C, h, w) of the chains of ``invs`` (one or a batch) run under their prompts."""
    invs = [on_device(inv, pipe._execution_device) for inv in invs]
    first = invs[0]
    steps = _steps_of(pipe, first)
    scale = _latents_scale(pipe, first.num_inference_steps, first.start_step)
    if len(invs) == 1:
        z_T, noises = first.latents * scale, first.noises
    else:
        z_T = torch.cat([inv.latents for inv in invs]) * scale
        noises = [
            None if n is None else torch.cat([inv.noises[i] for inv in invs]) for i, n in enumerate(first.noises)
        ]
    return sample(_eps_fn(pipe, first, prompt, guidance_scale, negative_prompt), steps, z_T, noises)[-1]


def _regenerate_batch(
    pipe: Pipeline,
    invs: list[Inversion],
    prompts: list[str],
    output_type: str,
    guidance_scale: float | None,
    negative_prompt: str | None = None,
) -> list[Image.Image] | torch.Tensor:
    clean = _sample_clean(pipe, invs, prompts, guidance_scale, negative_prompt)
    if output_type == "latent":
        return clean
    return [_decode(pipe, clean[b : b + 1], _output_size(inv, pipe.vae_scale_factor)) for b, inv in enumerate(invs)]


def _decode(pipe: Pipeline, clean: torch.Tensor, size: tuple[int, int]) -> Image.Image:
    """The image of clean latents (1, C, h, w) at ``size`` (width, height)."""
    image = adapter.decode_latents(pipe, clean)
    return image if image.size == size else image.resize(size, Image.Resampling.LANCZOS)


@torch.no_grad()
def auto_mask(
    pipe: Pipeline,
    inv: Inversion,
    target_prompt: str,
    *,
    threshold: float = 0.5,
    guidance_scale: float | None = None,
) -> Image.Image:
    """Where the edit acts, estimated DiffEdit-style from the noise predictions under the source and target prompts.

    Evaluates both prompts at each inverted latent (2 UNet calls per step); returns a binary grayscale mask (255 =
    edit) at the input image's size, to show the user as an overlay and to pass back as ``mask=``.
    """
    _check_prompt(pipe, target_prompt)
    if not inv.prompt:
        raise ValueError("this inversion does not record its source prompt; pass a painted mask instead")
    inv = on_device(inv, pipe._execution_device)
    steps = _steps_of(pipe, inv)
    difference = noise_difference(
        _eps_fn(pipe, inv, inv.prompt, guidance_scale),
        _eps_fn(pipe, inv, target_prompt, guidance_scale),
        steps,
        inv.trajectory[:-1],
    )
    return mask_image(threshold_mask(difference, threshold), _output_size(inv, pipe.vae_scale_factor))
