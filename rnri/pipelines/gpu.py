"""The fast GPU path: speed knobs applied to a stock pipeline, and a tiny preview decoder.

Every knob is a field of :class:`FastPath`; :func:`apply_fast_path` applies them in place and says what it did.
On the CPU each knob is a safe no-op unless it says otherwise. fp16 is not a knob here: ``rnri.load_pipeline``
already loads fp16 on CUDA. Prompt embeddings are cached by ``rnri.pipelines.adapter.encode_prompt``. Each knob is
measured by ``python -m rnri_lab.bench.knobs`` before it becomes a default.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from PIL import Image

import rnri
from rnri.core.counting import stopwatch

if TYPE_CHECKING:  # diffusers is imported where it is used: front ends read OFFLOAD_CHOICES before loading it
    from diffusers import AutoencoderTiny, LatentConsistencyModelPipeline

OFFLOAD_CHOICES = ("auto", "on", "off")
TINY_PREVIEW = "tiny"  # a seeded random TAESD-shaped decoder: same code path, no download (its images are noise)
GIB = 1024**3


class FastPathError(RuntimeError):
    """A speed knob could not be applied here (e.g. torch.compile without a compiler); the message says why."""


@dataclass(frozen=True)
class FastPath:
    """Speed knobs for a pipeline; each is measured (``rnri_lab.bench.knobs``) before it becomes a default."""

    channels_last: bool = False  # UNet and VAE weights in NHWC memory format (faster convolutions on tensor cores)
    sdpa: bool = True  # PyTorch scaled-dot-product attention (diffusers' default); False: the classic processor
    compile: bool = False  # torch.compile the UNet's forward, then warm up; needs a C compiler; not on ZeroGPU
    compile_mode: str | None = None  # torch.compile mode, e.g. "max-autotune-no-cudagraphs"; None: its default
    compile_backend: str = "inductor"  # "eager" traces the graph but generates no code (tests, debugging)
    cpu_offload: str = "auto"  # "on": model CPU offload; "off"; "auto": on when the GPU is below offload_below_gib
    offload_below_gib: float = 6.0  # fp16 weights are 2.1 GB and a Newton step's activations come on top
    preview_vae: str | None = None  # TAESD for fast previews: a Hub id ("madebyollin/taesd"), a folder, or "tiny"

    def __post_init__(self) -> None:
        if self.cpu_offload not in OFFLOAD_CHOICES:
            raise ValueError(f"cpu_offload must be one of {OFFLOAD_CHOICES}, got {self.cpu_offload!r}")


@dataclass
class FastPipeline:
    """What :func:`apply_fast_path` did to a pipeline, and the preview decoder it loaded (None without one)."""

    pipe: LatentConsistencyModelPipeline
    applied: list[str]  # knobs that took effect, e.g. ["channels_last", "compile"]
    skipped: list[str]  # knobs that were asked for but do not apply here, each with the reason
    preview_vae: AutoencoderTiny | None = None
    warmup_seconds: float | None = None  # time of the warm-up run (compilation), when there was one


def execution_device(pipe: LatentConsistencyModelPipeline) -> torch.device:
    """The device the pipeline computes on (with CPU offload: the GPU, not where the weights rest)."""
    return pipe._execution_device


def wants_offload(config: FastPath, device: torch.device) -> bool:
    """Whether model CPU offload should be on for ``device`` (never on a CPU; "auto" asks the GPU's size)."""
    if device.type != "cuda" or config.cpu_offload == "off":
        return False
    if config.cpu_offload == "on":
        return True
    try:
        total = torch.cuda.get_device_properties(device).total_memory
    except (RuntimeError, AssertionError, AttributeError):  # emulated or restricted CUDA (e.g. ZeroGPU at start)
        return False
    return total < config.offload_below_gib * GIB


def apply_fast_path(pipe: LatentConsistencyModelPipeline, config: FastPath, *, warm_up: bool = True) -> FastPipeline:
    """Apply ``config`` to ``pipe`` in place (it changes the resident pipeline for every caller)."""
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    from rnri.pipelines import adapter  # diffusers loads with it: front ends import this module before they need it
    from rnri.pipelines.flux import is_flux

    device = execution_device(pipe)
    applied, skipped = [], []
    if is_flux(pipe):  # its transformer's attention has its own processor (SDPA already); TAESD has 4 channels
        skipped += [f"{knob} (not for FLUX)" for knob, on in _unet_knobs(config).items() if on]
        config = dataclasses.replace(config, channels_last=False, preview_vae=None)
    else:
        processor = AttnProcessor2_0() if config.sdpa else AttnProcessor()
        pipe.unet.set_attn_processor(processor)
        pipe.vae.set_attn_processor(processor)
        applied.append("sdpa" if config.sdpa else "classic attention")
    if config.channels_last:
        pipe.unet.to(memory_format=torch.channels_last)
        pipe.vae.to(memory_format=torch.channels_last)
        applied.append("channels_last")
    if wants_offload(config, device):
        pipe.enable_model_cpu_offload(device=device)
        applied.append("cpu_offload")
    elif config.cpu_offload == "on":
        skipped.append(f"cpu_offload (needs a CUDA GPU; the pipeline is on {device.type})")
    if config.compile:
        compile_unet(pipe, config)
        applied.append("compile")
    preview = (
        load_preview_vae(config.preview_vae, device, adapter.denoiser(pipe).dtype) if config.preview_vae else None
    )
    if preview is not None:
        applied.append("preview_vae")
    seconds = warm_up_pipeline(pipe) if config.compile and warm_up else None
    return FastPipeline(pipe, applied, skipped, preview, seconds)


def _unet_knobs(config: FastPath) -> dict[str, bool]:
    """The knobs made for a UNet pipeline's modules, and whether each is asked for."""
    return {
        "classic attention": not config.sdpa,
        "channels_last": config.channels_last,
        "preview_vae": bool(config.preview_vae),
    }


def compile_unet(pipe: LatentConsistencyModelPipeline, config: FastPath) -> None:
    """``torch.compile`` the denoiser's forward (the UNet, FLUX's transformer); hooks (call counting, CPU offload)
    stay outside the compiled graph."""
    from rnri.pipelines import adapter

    unet = adapter.denoiser(pipe)
    if getattr(unet.forward, "_rnri_compiled", False):
        return
    try:
        compiled = torch.compile(unet.forward, mode=config.compile_mode, backend=config.compile_backend)
    except Exception as error:  # an unknown backend or mode, or a torch built without the compiler
        raise _compile_error("setting up torch.compile", error) from error
    compiled._rnri_compiled = True
    unet.forward = compiled


def warm_up_pipeline(pipe: LatentConsistencyModelPipeline, resolution: int | None = None) -> float:
    """One inversion and one regeneration at ``resolution`` (default: native) so compilation happens now."""
    from rnri.pipelines import adapter

    side = resolution or adapter.native_resolution(pipe)
    image = Image.new("RGB", (side, side), (128, 128, 128))
    try:
        with stopwatch(execution_device(pipe)) as warm_up:
            inv = rnri.invert(pipe, "warm-up", image=image)
            rnri.regenerate(pipe, inv, "warm-up", output_type="latent")
    except Exception as error:  # compiler and toolchain errors come in many types
        raise _compile_error("the torch.compile warm-up", error) from error
    return warm_up.seconds


def _compile_error(what: str, error: Exception) -> FastPathError:
    return FastPathError(
        f"{what} failed ({type(error).__name__}: {error}); compiling needs a C compiler (gcc) and, on CUDA, "
        "Triton. Run without compile."
    )


def tiny_preview_vae(seed: int = 0) -> AutoencoderTiny:
    """A TAESD-shaped decoder with seeded random weights and tiny channels (tests; its images are noise)."""
    from diffusers import AutoencoderTiny

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return AutoencoderTiny(encoder_block_out_channels=(8, 8, 8, 8), decoder_block_out_channels=(8, 8, 8, 8))


def load_preview_vae(source: str, device: torch.device | str, dtype: torch.dtype) -> AutoencoderTiny:
    """TAESD from a Hub id or local folder (safetensors only), or ``"tiny"``; ``ModelLoadError`` if it can't be had."""
    from diffusers import AutoencoderTiny

    from rnri.pipelines.loading import ModelLoadError

    if source == TINY_PREVIEW:
        vae = tiny_preview_vae()
    else:
        try:
            vae = AutoencoderTiny.from_pretrained(source, dtype=dtype, use_safetensors=True)
        except Exception as error:  # hub, network, file and format errors all end here
            where = "local folder" if Path(source).exists() else "Hugging Face Hub id"
            raise ModelLoadError(
                f"could not load the preview decoder {source!r} ({where}): {type(error).__name__}: {error}\n"
                "Ways out: run once with internet access so madebyollin/taesd is cached (10 MB); pass a local "
                "folder holding AutoencoderTiny safetensors weights; or turn the preview decoder off."
            ) from error
    vae = vae.requires_grad_(False).to(device=device)
    return vae if vae.dtype == dtype else vae.to(dtype=dtype)


@torch.no_grad()
def preview_image(preview_vae: AutoencoderTiny, latents: torch.Tensor, size: tuple[int, int] | None = None):
    """A fast RGB preview of clean latents (1, 4, h, w) (scaled as the UNet sees them), resized to ``size``."""
    param = next(preview_vae.parameters())
    pixels = preview_vae.decode(latents.to(param.device, param.dtype), return_dict=False)[0]  # in [-1, 1]
    array = (pixels[0].float().clamp(-1, 1) * 127.5 + 127.5).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    image = Image.fromarray(array, "RGB") if array.shape[-1] == 3 else Image.fromarray(array[..., 0])
    return image if size is None or image.size == size else image.resize(size, Image.Resampling.BILINEAR)
