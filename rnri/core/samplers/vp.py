"""The variance-preserving forward process of DDPM (Ho et al. 2020), on which the LCM and DDIM chains run.

z_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps,   abar_t = alphas_cumprod[t]
"""

from __future__ import annotations

import math

import torch


def predict_x0(z_t: torch.Tensor, eps: torch.Tensor, abar_t: float) -> torch.Tensor:
    """``x0 = (z_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)`` (DDPM Eq. 15)."""
    return (z_t - math.sqrt(1.0 - abar_t) * eps) / math.sqrt(abar_t)


def eps_from_v(v: torch.Tensor, z_t: torch.Tensor, abar_t: float) -> torch.Tensor:
    """The noise of a v-prediction, ``eps = sqrt(abar_t) v + sqrt(1 - abar_t) z_t`` (Salimans & Ho 2022, s4)."""
    return math.sqrt(abar_t) * v + math.sqrt(1.0 - abar_t) * z_t


def prior(y: torch.Tensor, abar_t: float, abar_next: float) -> tuple[torch.Tensor, float]:
    """``q(z_t | z_next = y) = N(sqrt(abar_t / abar_next) y, (1 - abar_t / abar_next) I)``.

    With ``abar_next = 1`` (a step that ends on the clean latent) this is ``q(z_t | z_0)``.
    """
    return math.sqrt(abar_t / abar_next) * y, 1.0 - abar_t / abar_next


def clean_prior(z0: torch.Tensor, abar_t: float) -> tuple[torch.Tensor, float]:
    """``q(z_t | z_0) = N(sqrt(abar_t) z_0, (1 - abar_t) I)``."""
    return math.sqrt(abar_t) * z0, 1.0 - abar_t
