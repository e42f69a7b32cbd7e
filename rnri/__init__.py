"""rnri: real-time image inversion and editing on diffusion models (Regularized Newton-Raphson): LCM and LCM-LoRA,
Stable Diffusion 1.5 / 2.x / SDXL with DDIM, SD-Turbo and SDXL-Turbo."""

from rnri.api import Inversion, auto_mask, invert, regenerate
from rnri.backbones import BACKBONES, Backbone, backbone_of
from rnri.inversion import InversionError
from rnri.loading import DEFAULT_MODEL, ModelLoadError, load_pipeline, tiny_pipeline
from rnri.masks import BlendConfig
from rnri.solvers import METHODS

__all__ = [
    "BACKBONES",
    "Backbone",
    "BlendConfig",
    "auto_mask",
    "backbone_of",
    "DEFAULT_MODEL",
    "METHODS",
    "Inversion",
    "InversionError",
    "ModelLoadError",
    "invert",
    "load_pipeline",
    "regenerate",
    "tiny_pipeline",
]
__version__ = "0.1.0"
