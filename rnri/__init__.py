"""rnri: real-time image inversion and editing on Latent Consistency Models (Regularized Newton-Raphson)."""

from rnri.api import Inversion, auto_mask, invert, regenerate
from rnri.inversion import InversionError
from rnri.loading import DEFAULT_MODEL, ModelLoadError, load_pipeline, tiny_pipeline
from rnri.masks import BlendConfig
from rnri.solvers import METHODS

__all__ = [
    "BlendConfig",
    "auto_mask",
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
