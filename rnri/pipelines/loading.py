"""Loading pipelines: from the Hub or a folder (safetensors only), optionally with an LCM-LoRA; the tiny shapes
models shipped in the package (``"tiny"``: the LCM student, ``"tiny-teacher"``: the latent-diffusion teacher with
DDIM, see ``rnri.shapes``); or small seeded random ones built from configs (the ``"tiny-*"`` architectures of
:data:`RANDOM_MODELS` and :data:`FLUX_MODELS`, for tests that need an architecture only and for cost benches).

Any pipeline ``AutoPipelineForText2Image`` makes that rnri runs on is accepted (``rnri.pipelines.adapter.PIPELINES``).
Its scheduler decides the chain family; one rnri cannot invert (Stable Diffusion 1.5 and 2.x ship PNDM) is replaced
by ``DDIMScheduler.from_config``, and ``lora=`` loads an LCM-LoRA and sets ``LCMScheduler``, as users do by hand.

Why one module of ~430 lines: every model rnri builds without a download (the shipped tiny ones and the seeded
random architectures) is resolved by the same ``load_pipeline`` and cached beside the Hub's.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from diffusers import (
    AutoencoderKL,
    AutoPipelineForText2Image,
    DDIMScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    FluxPipeline,
    FluxTransformer2DModel,
    LatentConsistencyModelPipeline,
    LCMScheduler,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from tokenizers import pre_tokenizers
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
    T5Config,
    T5EncoderModel,
    T5Tokenizer,
)

from rnri.pipelines import adapter
from rnri.pipelines.backbones import DEFAULT_MODEL  # defined where importing it loads nothing (rnri --help)
from rnri.shapes.models import STUDENT_DIR, TEACHER_DIR

TINY = "tiny"
TINY_DIR = STUDENT_DIR  # the shapes LCM, shipped in the package
TINY_TEACHER = "tiny-teacher"  # the shapes latent-diffusion teacher (StableDiffusionPipeline, DDIM)
TOKENIZER_MAX_LENGTH = 77  # CLIP's context, as in Stable Diffusion

_RESIDENT: dict[tuple[str, str | None, str, torch.dtype], Any] = {}
_LOCK = threading.Lock()


class ModelLoadError(RuntimeError):
    """The model's weights could not be had; the message names the model and the ways out."""


def default_device() -> torch.device:
    """CUDA when present, else Apple's MPS, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def load_pipeline(
    model: str = DEFAULT_MODEL,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    *,
    lora: str | None = None,
) -> Any:
    """A resident pipeline: a Hub id or local folder (fp16 on CUDA, bf16 for FLUX, fp32 elsewhere), ``"tiny"`` (the
    shapes LCM shipped in the package), ``"tiny-teacher"`` (its latent-diffusion teacher, DDIM) or a ``"tiny-*"``
    random-weight architecture; ``lora``: an LCM-LoRA (Hub id or folder, safetensors) fused into it, with
    ``LCMScheduler``.

    Loaded once per (model, lora, device, dtype) and kept; later calls return the same object.
    """
    device = torch.device(device) if device is not None else default_device()
    dtype = dtype or default_dtype(model, device)
    key = (model, lora, str(device), dtype)
    with _LOCK:
        if key not in _RESIDENT:
            pipe = _build(model, dtype)
            if lora is not None:
                with_lcm_lora(pipe, lora)
            _RESIDENT[key] = frozen_on(pipe, device, dtype)
        return _RESIDENT[key]


def _build(model: str, dtype: torch.dtype) -> Any:
    if model in (TINY, TINY_TEACHER):
        return _from_pretrained(str(TINY_DIR if model == TINY else TEACHER_DIR), dtype)
    if model in RANDOM_MODELS:
        return build_random(RANDOM_MODELS[model])
    if model in FLUX_MODELS:
        return build_flux(FLUX_MODELS[model])
    return _from_pretrained(model, dtype)


def frozen_on(pipe: Any, device: torch.device | str, dtype: torch.dtype) -> Any:
    """``pipe`` with its weights frozen (the solvers need gradients in the latent only), no progress bars, on
    ``device`` in ``dtype``."""
    for name in ("unet", "transformer", "vae", "text_encoder", "text_encoder_2"):
        module = getattr(pipe, name, None)
        if module is not None:
            module.requires_grad_(False)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device) if pipe.dtype == dtype else pipe.to(device=device, dtype=dtype)


def invertible_scheduler(pipe: Any) -> Any:
    """``pipe`` with a scheduler rnri can invert: its own when supported, else DDIM on its noise schedule."""
    if type(pipe.scheduler) not in adapter.SCHEDULER_CHAINS:
        pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config, clip_sample=False)
    return pipe


def with_lcm_lora(pipe: Any, lora: str) -> Any:
    """``pipe`` with the LCM-LoRA ``lora`` (Hub id or folder, safetensors only) fused into its weights and
    ``LCMScheduler`` on its noise schedule, the way the LCM-LoRA model cards load one."""
    pipe.scheduler = LCMScheduler.from_config(pipe.scheduler.config)
    try:
        pipe.load_lora_weights(lora, use_safetensors=True)
    except Exception as error:  # hub, network, file, format and missing-peft errors all end here
        raise ModelLoadError(
            f"could not load the LoRA {lora!r} ({_where(lora)}): {type(error).__name__}: {error}\n"
            "A LoRA is loaded with peft (pip install peft) from .safetensors weights in diffusers layout."
        ) from error
    pipe.fuse_lora()
    pipe.unload_lora_weights()  # the fused weights stay; the LoRA layers (and their cost) go
    return pipe


def _where(model: str) -> str:
    return "local folder" if Path(model).exists() else "Hugging Face Hub id"


def _from_pretrained(model: str, dtype: torch.dtype) -> Any:
    try:
        pipe = AutoPipelineForText2Image.from_pretrained(model, dtype=dtype, use_safetensors=True)
    except Exception as error:  # hub, network, file and format errors all end here
        raise ModelLoadError(
            f"could not load the model {model!r} ({_where(model)}): {type(error).__name__}: {error}\n"
            "Ways out: (1) run once with internet access so the weights are cached (HF_HOME, about 2 GB); "
            "(2) pass a local folder holding the model in diffusers layout with .safetensors weights; "
            f"(3) use model={TINY!r} for a tiny demo model with random weights (no download, meaningless images)."
        ) from error
    try:
        adapter.check_pipeline(pipe)
    except ValueError as error:
        raise ModelLoadError(f"the model {model!r} is not one rnri runs on: {error}") from error
    return invertible_scheduler(pipe)


def tiny_tokenizer() -> CLIPTokenizer:
    """A CLIP tokenizer whose vocabulary is the 256 byte-level characters, each also as a word end; no merges."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tokens = alphabet + [c + "</w>" for c in alphabet] + ["<|startoftext|>", "<|endoftext|>"]
    tokenizer = CLIPTokenizer(vocab={t: i for i, t in enumerate(tokens)}, merges=[])
    tokenizer.model_max_length = TOKENIZER_MAX_LENGTH
    return tokenizer


TINY_UNET: dict[str, Any] = {
    "sample_size": 8,
    "in_channels": 4,
    "out_channels": 4,
    "layers_per_block": 1,
    "block_out_channels": (16, 32),
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"),
    "cross_attention_dim": 32,
    "attention_head_dim": 8,
    "norm_num_groups": 8,
    "time_cond_proj_dim": 32,
}
TINY_VAE: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 4,
    "block_out_channels": (8, 8, 16, 16),
    "norm_num_groups": 4,
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "sample_size": 64,
}
TINY_TEXT: dict[str, Any] = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
}


SD_NOISE: dict[str, Any] = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"}  # SD's


def lcm_scheduler() -> LCMScheduler:
    """The scheduler of LCM_Dreamshaper_v7 (Stable Diffusion's noise schedule)."""
    return LCMScheduler(**SD_NOISE, clip_sample=False, set_alpha_to_one=True)


def ddim_scheduler() -> DDIMScheduler:
    """Stable Diffusion 1.5's noise schedule with DDIM, as ``DDIMScheduler.from_config`` of its own config makes it."""
    return DDIMScheduler(**SD_NOISE, clip_sample=False, set_alpha_to_one=False, steps_offset=1)


def euler_ancestral_scheduler() -> EulerAncestralDiscreteScheduler:
    """SDXL-Turbo's scheduler: Euler ancestral, trailing spacing."""
    return EulerAncestralDiscreteScheduler(**SD_NOISE, timestep_spacing="trailing", steps_offset=1)


def euler_scheduler() -> EulerDiscreteScheduler:
    """SD-Turbo's scheduler: Euler, trailing spacing."""
    return EulerDiscreteScheduler(**SD_NOISE, timestep_spacing="trailing", steps_offset=1)


@dataclass(frozen=True)
class Architecture:
    """A pipeline's architecture, to build with seeded random weights: config keyword arguments per component."""

    pipeline: type  # LatentConsistencyModelPipeline, StableDiffusionPipeline or StableDiffusionXLPipeline
    unet: dict[str, Any]  # UNet2DConditionModel
    vae: dict[str, Any]  # AutoencoderKL
    text_encoder: dict[str, Any]  # CLIPTextConfig of the (first) text encoder
    scheduler: Callable[[], Any] = lcm_scheduler  # makes a fresh scheduler
    text_encoder_2: dict[str, Any] | None = field(default=None)  # SDXL's second encoder (with projection)


def tiny_pipeline() -> LatentConsistencyModelPipeline:
    """A fresh copy of the tiny model (``load_pipeline("tiny")`` keeps a resident one): the shapes LCM, fp32."""
    return _from_pretrained(str(TINY_DIR), torch.float32)


def random_tiny_pipeline(seed: int = 0) -> LatentConsistencyModelPipeline:
    """A tiny LCM pipeline (64x64 images, 8x8 latents) with seeded random weights, for tests that need an
    architecture only: no files at all."""
    return random_pipeline(TINY_UNET, TINY_VAE, TINY_TEXT, seed)


def random_pipeline(
    unet: dict[str, Any], vae: dict[str, Any], text_encoder: dict[str, Any], seed: int = 0
) -> LatentConsistencyModelPipeline:
    """An LCM pipeline of the given architectures (config keyword arguments) with seeded random weights and the
    byte-level tokenizer of :func:`tiny_tokenizer`; nothing is downloaded."""
    return build_random(Architecture(LatentConsistencyModelPipeline, unet, vae, text_encoder), seed)


def _text_config(tokenizer: CLIPTokenizer, options: dict[str, Any]) -> CLIPTextConfig:
    return CLIPTextConfig(
        vocab_size=len(tokenizer),
        max_position_embeddings=TOKENIZER_MAX_LENGTH,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **options,
    )


def build_random(architecture: Architecture, seed: int = 0) -> Any:
    """A pipeline of ``architecture`` with seeded random weights and the byte-level tokenizer; nothing downloaded.

    Components are drawn in the order UNet, VAE, text encoder(s), so an LCM pipeline's weights do not change as
    architectures are added.
    """
    tokenizer = tiny_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        components: dict[str, Any] = {
            "unet": UNet2DConditionModel(**architecture.unet),
            "vae": AutoencoderKL(**architecture.vae),
            "text_encoder": CLIPTextModel(_text_config(tokenizer, architecture.text_encoder)),
            "tokenizer": tokenizer,
            "scheduler": architecture.scheduler(),
        }
        if architecture.text_encoder_2 is not None:  # SDXL: pooled embeddings and time ids from a second encoder
            second = _text_config(tokenizer, architecture.text_encoder_2)
            components |= {"text_encoder_2": CLIPTextModelWithProjection(second), "tokenizer_2": tokenizer}
    if architecture.pipeline is StableDiffusionXLPipeline:
        return StableDiffusionXLPipeline(**components, add_watermarker=False)
    return architecture.pipeline(
        **components, safety_checker=None, feature_extractor=None, requires_safety_checker=False
    )


TINY_SD_UNET: dict[str, Any] = {  # Stable Diffusion 1.5's layout, tiny: cross-attention at 1, 1/2 and 1/4
    "sample_size": 8,
    "in_channels": 4,
    "out_channels": 4,
    "layers_per_block": 1,
    "block_out_channels": (8, 16, 16, 16),
    "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    "cross_attention_dim": 32,
    "attention_head_dim": 2,
    "norm_num_groups": 8,
}
TINY_SD2_UNET = TINY_SD_UNET | {"use_linear_projection": True}  # SD 2.x's (and SD-Turbo's) linear projections
TINY_SDXL_UNET: dict[str, Any] = TINY_SD2_UNET | {  # SDXL's layout and added conditioning: pooled text, 6 time ids
    "block_out_channels": (8, 16, 16),
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    "attention_head_dim": (1, 2, 4),
    "transformer_layers_per_block": (1, 1, 2),
    "cross_attention_dim": 64,  # the two text encoders' hidden states side by side
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 8,
    "projection_class_embeddings_input_dim": 32 + 6 * 8,  # pooled projection + 6 time ids x 8
}
TINY_SDXL_TEXT_2 = TINY_TEXT | {"projection_dim": 32}

# The offline stand-ins of each backbone's architecture, by the name ``load_pipeline`` takes (tests, demos).
RANDOM_MODELS: dict[str, Architecture] = {
    "tiny-sd": Architecture(StableDiffusionPipeline, TINY_SD_UNET, TINY_VAE, TINY_TEXT, ddim_scheduler),
    "tiny-sdxl": Architecture(
        StableDiffusionXLPipeline, TINY_SDXL_UNET, TINY_VAE, TINY_TEXT, ddim_scheduler, TINY_SDXL_TEXT_2
    ),
    "tiny-sd-turbo": Architecture(StableDiffusionPipeline, TINY_SD2_UNET, TINY_VAE, TINY_TEXT, euler_scheduler),
    "tiny-sdxl-turbo": Architecture(
        StableDiffusionXLPipeline, TINY_SDXL_UNET, TINY_VAE, TINY_TEXT, euler_ancestral_scheduler, TINY_SDXL_TEXT_2
    ),
}

# --- FLUX ----------------------------------------------------------------------------------------------------------


def is_flux_model(model: str) -> bool:
    """Whether ``model`` names a FLUX pipeline, without downloading anything: a folder's ``model_index.json`` says
    ``FluxPipeline``; a Hub id (or a folder without that file) has "flux" in its name (FLUX.1-schnell, -dev and
    their fine-tunes do)."""
    index = Path(model) / "model_index.json"
    if index.is_file():
        return json.loads(index.read_text()).get("_class_name") == FluxPipeline.__name__
    return "flux" in model.lower()


def default_dtype(model: str, device: torch.device) -> torch.dtype:
    """fp32 off CUDA; on CUDA bf16 for FLUX (released in bf16: its T5 and transformer overflow fp16), else fp16."""
    if device.type != "cuda":
        return torch.float32
    return torch.bfloat16 if is_flux_model(model) else torch.float16


def flow_scheduler(guidance_embeds: bool = False) -> FlowMatchEulerDiscreteScheduler:
    """FLUX.1-schnell's scheduler (no shift), or with ``guidance_embeds`` FLUX.1-dev's (shift 3, dynamic: mu grows
    with the image's token count)."""
    if guidance_embeds:
        return FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True)
    return FlowMatchEulerDiscreteScheduler(shift=1.0, use_dynamic_shifting=False)


def tiny_t5_tokenizer() -> T5Tokenizer:
    """A T5 (Unigram) tokenizer made in code: the printable ASCII characters, each also as a word start ("▁a");
    pad, end and unknown tokens as T5's (ids 0, 1, 2); no sentinel tokens. Nothing is downloaded."""
    chars = [chr(c) for c in range(33, 127)]
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    vocab += [("\u2581" + c, -2.5) for c in chars] + [(c, -3.0) for c in chars]
    return T5Tokenizer(vocab=vocab, extra_ids=0)


@dataclass(frozen=True)
class FluxArchitecture:
    """A FLUX pipeline's architecture, to build with seeded random weights: config keyword arguments per component."""

    transformer: dict[str, Any]  # FluxTransformer2DModel; guidance_embeds makes it a dev (guidance-distilled) model
    vae: dict[str, Any]  # AutoencoderKL with 16 latent channels, shift and scaling factors
    clip: dict[str, Any]  # CLIPTextConfig of the pooled-prompt encoder (hidden size = pooled_projection_dim)
    t5: dict[str, Any]  # T5Config of the text encoder (d_model = joint_attention_dim)
    default_sample_size: int = 8  # the pipeline's native latent side (FluxPipeline's is 128: 1024 px)


def build_flux(architecture: FluxArchitecture, seed: int = 0) -> FluxPipeline:
    """A FLUX pipeline of ``architecture`` with seeded random weights, the byte-level CLIP tokenizer and the tiny T5
    tokenizer; nothing is downloaded. Components are drawn in the order transformer, VAE, CLIP, T5."""
    guided = architecture.transformer.get("guidance_embeds", False)
    clip_tokenizer, t5_tokenizer = tiny_tokenizer(), tiny_t5_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer = FluxTransformer2DModel(**architecture.transformer)
        vae = AutoencoderKL(**architecture.vae)
        clip = CLIPTextModel(_text_config(clip_tokenizer, architecture.clip))
        t5 = T5EncoderModel(T5Config(vocab_size=len(t5_tokenizer), **architecture.t5))
    for module in (transformer, vae, clip, t5):
        module.eval()  # as from_pretrained leaves them: T5's dropout (0.1) would make every encoding differ
    pipe = FluxPipeline(flow_scheduler(guided), vae, clip, clip_tokenizer, t5, t5_tokenizer, transformer)
    pipe.default_sample_size = architecture.default_sample_size  # the stock attribute its default height comes from
    return pipe


TINY_FLUX_TRANSFORMER: dict[str, Any] = {  # FLUX.1's layout at a tiny width: 1 double- and 1 single-stream block
    "patch_size": 1,
    "in_channels": 64,  # 16 latent channels x 2x2 patches
    "num_layers": 1,
    "num_single_layers": 1,
    "attention_head_dim": 16,
    "num_attention_heads": 2,
    "joint_attention_dim": 32,
    "pooled_projection_dim": 32,
    "axes_dims_rope": (4, 6, 6),  # sums to attention_head_dim
}
TINY_FLUX_VAE: dict[str, Any] = TINY_VAE | {  # FLUX's VAE: 16 channels, no quant convs, its shift and scale
    "latent_channels": 16,
    "use_quant_conv": False,
    "use_post_quant_conv": False,
    "scaling_factor": 0.3611,
    "shift_factor": 0.1159,
}
TINY_T5: dict[str, Any] = {
    "d_model": 32,
    "d_ff": 64,
    "d_kv": 8,
    "num_layers": 2,
    "num_heads": 4,
    "relative_attention_num_buckets": 8,
    "feed_forward_proj": "gated-gelu",  # T5 v1.1's, as FLUX's T5-XXL
}

# FLUX's offline stand-ins, by the name ``load_pipeline`` takes: schnell's layout and dev's (guidance embedded).
FLUX_MODELS: dict[str, FluxArchitecture] = {
    "tiny-flux": FluxArchitecture(TINY_FLUX_TRANSFORMER, TINY_FLUX_VAE, TINY_TEXT, TINY_T5),
    "tiny-flux-dev": FluxArchitecture(
        TINY_FLUX_TRANSFORMER | {"guidance_embeds": True}, TINY_FLUX_VAE, TINY_TEXT, TINY_T5
    ),
}
BUILTIN_MODELS = (TINY, TINY_TEACHER, *RANDOM_MODELS, *FLUX_MODELS)  # what load_pipeline builds: no download
