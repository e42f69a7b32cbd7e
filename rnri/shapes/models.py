"""The shapes models' architectures, schedules and where the trained weights live.

Three components are shared (VAE, text encoder, tokenizer); the teacher UNet predicts noise (a latent diffusion
model sampled with DDIM, as Stable Diffusion is), the student is an LCM distilled from it with a guidance
embedding, sampled in 4 steps (as ``SimianLuo/LCM_Dreamshaper_v7`` is). Both are saved as stock diffusers
pipelines (safetensors) in ``MODELS_DIR``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    LatentConsistencyModelPipeline,
    LCMScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from rnri.shapes.tokenizer import MAX_LENGTH

MODELS_DIR = Path(__file__).resolve().parent / "weights"
STUDENT_DIR = MODELS_DIR / "lcm"  # LatentConsistencyModelPipeline: what --model tiny loads
TEACHER_DIR = MODELS_DIR / "sd"  # StableDiffusionPipeline with DDIMScheduler
DEFAULT_GUIDANCE = 8.5  # the student's default guidance scale (measured: docs/results.md)
TEACHER_GUIDANCE = 7.5  # the teacher's, as Stable Diffusion's

VAE: dict[str, Any] = {  # 64x64x3 pixels <-> 16x16x4 latents (downsampling factor 4)
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 4,
    "block_out_channels": (32, 64, 64),
    "layers_per_block": 1,
    "norm_num_groups": 16,
    "down_block_types": ("DownEncoderBlock2D",) * 3,
    "up_block_types": ("UpDecoderBlock2D",) * 3,
    "sample_size": 64,
}
TEXT: dict[str, Any] = {  # a 3-layer CLIP text transformer, 64 wide
    "hidden_size": 64,
    "intermediate_size": 256,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "max_position_embeddings": MAX_LENGTH,
}
UNET: dict[str, Any] = {  # 16x16 latents; cross-attention to the caption at 8x8 (global there)
    "sample_size": 16,
    "in_channels": 4,
    "out_channels": 4,
    "layers_per_block": 1,
    "block_out_channels": (64, 128),
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"),
    "cross_attention_dim": 64,
    "attention_head_dim": 8,
    "norm_num_groups": 16,
}
GUIDANCE_EMBEDDING = 64  # time_cond_proj_dim of the student: the width of LCM's guidance embedding
SCHEDULE: dict[str, Any] = {  # Stable Diffusion's training schedule
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "prediction_type": "epsilon",
}


def vae(scaling_factor: float = 1.0) -> AutoencoderKL:
    return AutoencoderKL(**VAE, scaling_factor=scaling_factor)


def text_encoder(tokenizer: CLIPTokenizer) -> CLIPTextModel:
    return CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            **TEXT,
        )
    )


def unet(student: bool = False) -> UNet2DConditionModel:
    """The teacher's UNet, or the student's: the same with a guidance embedding (``time_cond_proj_dim``)."""
    return UNet2DConditionModel(**UNET, time_cond_proj_dim=GUIDANCE_EMBEDDING if student else None)


def ddim_scheduler() -> DDIMScheduler:
    """Stable Diffusion 1.5's DDIM configuration."""
    return DDIMScheduler(**SCHEDULE, set_alpha_to_one=False, steps_offset=1, timestep_spacing="leading")


def lcm_scheduler() -> LCMScheduler:
    """``SimianLuo/LCM_Dreamshaper_v7``'s LCM configuration: 4 steps are timesteps [999, 759, 499, 259]."""
    return LCMScheduler(**SCHEDULE, set_alpha_to_one=True, original_inference_steps=50, timestep_scaling=10.0)


def lcm_pipeline(vae_model, text_model, tokenizer, unet_model) -> LatentConsistencyModelPipeline:
    return LatentConsistencyModelPipeline(
        vae=vae_model,
        text_encoder=text_model,
        tokenizer=tokenizer,
        unet=unet_model,
        scheduler=lcm_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def sd_pipeline(vae_model, text_model, tokenizer, unet_model) -> StableDiffusionPipeline:
    return StableDiffusionPipeline(
        vae=vae_model,
        text_encoder=text_model,
        tokenizer=tokenizer,
        unet=unet_model,
        scheduler=ddim_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
