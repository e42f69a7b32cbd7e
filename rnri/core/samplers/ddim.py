"""The DDIM chain (Song et al. 2021, eta = 0; diffusers' ``DDIMScheduler``), as Stable Diffusion samples.

    x0 = (z_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)                       DDIM Eq. 12, "predicted x0"
    S_i(z_t) = sqrt(abar_prev) x0 + sqrt(1 - abar_prev) eps                 DDIM Eq. 12 with sigma_t = 0

``abar_prev`` is ``alphas_cumprod[t - T // n]`` as the scheduler computes it (not necessarily the next timestep of
the schedule), and on the last step the scheduler's ``final_alpha_cumprod`` (1, or ``alphas_cumprod[0]`` for
Stable Diffusion's ``set_alpha_to_one=False``, whose output is then not quite clean: the stock pipeline decodes it
as it is, and so does rnri). Classifier-free guidance lives in eps, not here. A stored noise n_i, where there is
one (after noise correction), takes the place of eps in the direction term, as in the LCM chain.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from rnri.core.samplers import vp


@dataclass(frozen=True)
class DDIMStep:
    """Coefficients of one deterministic DDIM step."""

    t: int  # timestep the UNet is evaluated at
    abar_t: float  # alphas_cumprod[t]
    abar_next: float  # abar_prev of the scheduler: alphas_cumprod[t - T // n], or final_alpha_cumprod
    is_last: bool  # the last step of the chain; it takes no stored noise


def step_map(z_t: torch.Tensor, eps: torch.Tensor, step: DDIMStep, noise: torch.Tensor | None) -> torch.Tensor:
    """``S_i(z) = sqrt(abar_next) x0 + sqrt(1 - abar_next) n_i`` with ``n_i = eps`` unless a noise is stored."""
    n_i = eps if noise is None else noise
    return math.sqrt(step.abar_next) * vp.predict_x0(z_t, eps, step.abar_t) + math.sqrt(1.0 - step.abar_next) * n_i


def solve_frozen(y: torch.Tensor, eps: torch.Tensor, step: DDIMStep, noise: torch.Tensor | None) -> torch.Tensor:
    """The z with ``S_i(z) = y`` for eps held fixed: ``x0 = (y - sqrt(1 - abar_next) n_i) / sqrt(abar_next)``,
    then ``z = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps`` (DDIM inversion, Eq. 12 read backwards)."""
    n_i = eps if noise is None else noise
    x0 = (y - math.sqrt(1.0 - step.abar_next) * n_i) / math.sqrt(step.abar_next)
    return math.sqrt(step.abar_t) * x0 + math.sqrt(1.0 - step.abar_t) * eps


def correct_noise(y: torch.Tensor, z_t: torch.Tensor, eps: torch.Tensor, step: DDIMStep) -> torch.Tensor:
    """The n_i in the direction term for which ``S_i(z_t) = y`` exactly (ReNoise-style correction)."""
    x0 = vp.predict_x0(z_t, eps, step.abar_t)
    return (y - math.sqrt(step.abar_next) * x0) / math.sqrt(1.0 - step.abar_next)


def prior(y: torch.Tensor, step: DDIMStep) -> tuple[torch.Tensor, float]:
    """``q(z_t | z_next = y)`` of the variance-preserving forward process."""
    return vp.prior(y, step.abar_t, step.abar_next)


def clean_prior(z0: torch.Tensor, step: DDIMStep) -> tuple[torch.Tensor, float]:
    """``q(z_t | z_0)``."""
    return vp.clean_prior(z0, step.abar_t)
