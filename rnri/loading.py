"""Loading LCM pipelines: from the Hub or a folder (safetensors only), or a tiny seeded one built from configs."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, LatentConsistencyModelPipeline, LCMScheduler, UNet2DConditionModel
from tokenizers import pre_tokenizers
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from rnri.backbones import DEFAULT_MODEL  # defined where importing it loads nothing (rnri --help)

TINY = "tiny"
TOKENIZER_MAX_LENGTH = 77  # CLIP's context, as in Stable Diffusion

_RESIDENT: dict[tuple[str, str, torch.dtype], LatentConsistencyModelPipeline] = {}
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
    model: str = DEFAULT_MODEL, device: str | torch.device | None = None, dtype: torch.dtype | None = None
) -> LatentConsistencyModelPipeline:
    """A resident LCM pipeline: a Hub id or local folder (fp16 on CUDA, fp32 elsewhere), or ``"tiny"``.

    Loaded once per (model, device, dtype) and kept; later calls return the same object.
    """
    device = torch.device(device) if device is not None else default_device()
    dtype = dtype or (torch.float16 if device.type == "cuda" else torch.float32)
    key = (model, str(device), dtype)
    with _LOCK:
        if key not in _RESIDENT:
            pipe = tiny_pipeline() if model == TINY else _from_pretrained(model, dtype)
            _RESIDENT[key] = frozen_on(pipe, device, dtype)
        return _RESIDENT[key]


def frozen_on(
    pipe: LatentConsistencyModelPipeline, device: torch.device | str, dtype: torch.dtype
) -> LatentConsistencyModelPipeline:
    """``pipe`` with its weights frozen (the solvers need gradients in the latent only), no progress bars, on
    ``device`` in ``dtype``."""
    pipe.unet.requires_grad_(False)
    pipe.vae.requires_grad_(False)
    pipe.text_encoder.requires_grad_(False)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device) if pipe.dtype == dtype else pipe.to(device=device, dtype=dtype)


def _from_pretrained(model: str, dtype: torch.dtype) -> LatentConsistencyModelPipeline:
    try:
        return LatentConsistencyModelPipeline.from_pretrained(model, dtype=dtype, use_safetensors=True)
    except Exception as error:  # hub, network, file and format errors all end here
        where = "local folder" if Path(model).exists() else "Hugging Face Hub id"
        raise ModelLoadError(
            f"could not load the model {model!r} ({where}): {type(error).__name__}: {error}\n"
            "Ways out: (1) run once with internet access so the weights are cached (HF_HOME, about 2 GB); "
            "(2) pass a local folder holding the model in diffusers layout with .safetensors weights; "
            f"(3) use model={TINY!r} for a tiny demo model with random weights (no download, meaningless images)."
        ) from error


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


def tiny_pipeline(seed: int = 0) -> LatentConsistencyModelPipeline:
    """A tiny LCM pipeline (64x64 images, 8x8 latents) with seeded random weights: same code path, no download."""
    return random_pipeline(TINY_UNET, TINY_VAE, TINY_TEXT, seed)


def random_pipeline(
    unet: dict[str, Any], vae: dict[str, Any], text_encoder: dict[str, Any], seed: int = 0
) -> LatentConsistencyModelPipeline:
    """An LCM pipeline of the given architectures (config keyword arguments) with seeded random weights and the
    byte-level tokenizer of :func:`tiny_tokenizer`; nothing is downloaded."""
    tokenizer = tiny_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet_model = UNet2DConditionModel(**unet)
        vae_model = AutoencoderKL(**vae)
        text_model = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=len(tokenizer),
                max_position_embeddings=TOKENIZER_MAX_LENGTH,
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
                **text_encoder,
            )
        )
    scheduler = LCMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=True
    )
    return LatentConsistencyModelPipeline(
        vae=vae_model,
        text_encoder=text_model,
        tokenizer=tokenizer,
        unet=unet_model,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
