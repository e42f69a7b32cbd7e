"""rnri: real-time image inversion and editing on diffusion models (Regularized Newton-Raphson): LCM and LCM-LoRA,
Stable Diffusion 1.5 / 2.x / SDXL with DDIM, SD-Turbo and SDXL-Turbo, FLUX.1-schnell and -dev.

The names below are imported on first use (PEP 562), so that ``import rnri`` (and ``rnri --help``) does not load
torch and diffusers before anything needs them.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from rnri.core.lazy import attach

_WHERE = {  # public name -> the module that defines it
    "Inversion": "rnri.api",
    "auto_mask": "rnri.api",
    "invert": "rnri.api",
    "regenerate": "rnri.api",
    "stock_latents": "rnri.api",
    "InversionError": "rnri.core.inversion",
    "BACKBONES": "rnri.pipelines.backbones",
    "Backbone": "rnri.pipelines.backbones",
    "DEFAULT_MODEL": "rnri.pipelines.backbones",
    "backbone_of": "rnri.pipelines.backbones",
    "default_guidance": "rnri.pipelines.backbones",
    "BUILTIN_MODELS": "rnri.pipelines.loading",
    "ModelLoadError": "rnri.pipelines.loading",
    "load_pipeline": "rnri.pipelines.loading",
    "tiny_pipeline": "rnri.pipelines.loading",
    "BlendConfig": "rnri.core.masks",
    "METHODS": "rnri.core.solvers",
    "InversionSettings": "rnri.core.settings",
    "preset": "rnri.core.settings",
    "load_inversion": "rnri.serialize",
    "save_inversion": "rnri.serialize",
    "saved_model": "rnri.serialize",
    "negative_prompt_support": "rnri.support",
    "steering_support": "rnri.support",
}
__all__ = [
    "BACKBONES",
    "BUILTIN_MODELS",
    "DEFAULT_MODEL",
    "METHODS",
    "Backbone",
    "BlendConfig",
    "Inversion",
    "InversionError",
    "InversionSettings",
    "ModelLoadError",
    "auto_mask",
    "backbone_of",
    "default_guidance",
    "invert",
    "load_inversion",
    "load_pipeline",
    "negative_prompt_support",
    "preset",
    "regenerate",
    "save_inversion",
    "saved_model",
    "steering_support",
    "stock_latents",
    "tiny_pipeline",
]
__version__ = "0.1.0"

if TYPE_CHECKING:
    from rnri.api import Inversion, auto_mask, invert, regenerate, stock_latents
    from rnri.core.inversion import InversionError
    from rnri.core.masks import BlendConfig
    from rnri.core.settings import InversionSettings, preset
    from rnri.core.solvers import METHODS
    from rnri.pipelines.backbones import BACKBONES, DEFAULT_MODEL, Backbone, backbone_of, default_guidance
    from rnri.pipelines.loading import BUILTIN_MODELS, ModelLoadError, load_pipeline, tiny_pipeline
    from rnri.serialize import load_inversion, save_inversion, saved_model
    from rnri.support import negative_prompt_support, steering_support


def _not_ours(record: logging.LogRecord) -> bool:
    """False for transformers' notice, printed three times as diffusers' pipelines are imported, that an image
    processor falls back to its PIL version without torchvision: rnri uses no image processor, so it is noise."""
    return "requires torchvision (not installed); falling back" not in record.getMessage()


logging.getLogger("transformers.utils.import_utils").addFilter(_not_ours)  # before anything imports diffusers
__getattr__, __dir__ = attach(__name__, _WHERE)
