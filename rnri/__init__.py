"""rnri: real-time image inversion and editing on Latent Consistency Models (Regularized Newton-Raphson)."""

from rnri.api import Inversion, invert, regenerate
from rnri.inversion import InversionError
from rnri.loading import DEFAULT_MODEL, ModelLoadError, load_pipeline, tiny_pipeline
from rnri.solvers import METHODS

__all__ = [
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
