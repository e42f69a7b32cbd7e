"""rnri: real-time image inversion and editing on diffusion models (Regularized Newton-Raphson): LCM and LCM-LoRA,
Stable Diffusion 1.5 / 2.x / SDXL with DDIM, SD-Turbo and SDXL-Turbo.

The names below are imported on first use (PEP 562), so that ``import rnri`` (and ``rnri --help``) does not load
torch and diffusers before anything needs them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rnri.lazy import attach

_WHERE = {  # public name -> the module that defines it
    "Inversion": "rnri.api",
    "auto_mask": "rnri.api",
    "invert": "rnri.api",
    "regenerate": "rnri.api",
    "InversionError": "rnri.inversion",
    "BACKBONES": "rnri.backbones",
    "Backbone": "rnri.backbones",
    "DEFAULT_MODEL": "rnri.backbones",
    "backbone_of": "rnri.backbones",
    "default_guidance": "rnri.backbones",
    "BUILTIN_MODELS": "rnri.loading",
    "ModelLoadError": "rnri.loading",
    "load_pipeline": "rnri.loading",
    "tiny_pipeline": "rnri.loading",
    "BlendConfig": "rnri.masks",
    "METHODS": "rnri.solvers",
    "InversionSettings": "rnri.settings",
    "preset": "rnri.settings",
    "load_inversion": "rnri.serialize",
    "save_inversion": "rnri.serialize",
    "saved_model": "rnri.serialize",
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
    "preset",
    "regenerate",
    "save_inversion",
    "saved_model",
    "tiny_pipeline",
]
__version__ = "0.1.0"

if TYPE_CHECKING:
    from rnri.api import Inversion, auto_mask, invert, regenerate
    from rnri.backbones import BACKBONES, DEFAULT_MODEL, Backbone, backbone_of, default_guidance
    from rnri.inversion import InversionError
    from rnri.loading import BUILTIN_MODELS, ModelLoadError, load_pipeline, tiny_pipeline
    from rnri.masks import BlendConfig
    from rnri.serialize import load_inversion, save_inversion, saved_model
    from rnri.settings import InversionSettings, preset
    from rnri.solvers import METHODS


__getattr__, __dir__ = attach(__name__, _WHERE)
