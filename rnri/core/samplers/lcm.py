"""The LCM chain (Luo et al. 2023; diffusers' ``LCMScheduler``), stochastic or deterministic.

Notation, as in the LCM paper and ``LCMScheduler``:
    abar_t      ``alphas_cumprod[t]``
    x0          predicted clean latent, ``(z - sqrt(1 - abar_t) eps) / sqrt(abar_t)``
    d           LCM's boundary-conditioned output, ``c_out x0 + c_skip z``
    n_i         the noise injected after step i (stochastic chain) or ``eps(z_i, t_i)`` (deterministic chain)

``S_i(z) = sqrt(abar_next) d + sqrt(1 - abar_next) n_i``; the last map returns ``d`` itself. With ``n_i = eps`` the
chain is DDIM (eta = 0) on LCM's timesteps, up to the tiny ``c_skip``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from rnri.core.samplers import vp


@dataclass(frozen=True)
class LCMStep:
    """Coefficients of one step map ``S_i`` of an LCM chain."""

    t: int  # timestep the UNet is evaluated at
    abar_t: float  # alphas_cumprod[t]
    abar_next: float  # alphas_cumprod of the next timestep; 1.0 on the last step (its output is clean)
    c_skip: float  # LCM boundary-condition scaling of z
    c_out: float  # LCM boundary-condition scaling of x0
    is_last: bool  # the last map returns d and injects no noise

    @property
    def prior_var(self) -> float:
        """Variance of the forward-process prior q(z_t | z_next): ``1 - abar_t / abar_next``."""
        return 1.0 - self.abar_t / self.abar_next


def predict_x0(z_t: torch.Tensor, eps: torch.Tensor, step: LCMStep) -> torch.Tensor:
    """``x0 = (z_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)`` (DDPM Eq. 15)."""
    return vp.predict_x0(z_t, eps, step.abar_t)


def denoise(z_t: torch.Tensor, eps: torch.Tensor, step: LCMStep) -> torch.Tensor:
    """LCM's consistency output ``d = c_out x0 + c_skip z_t``."""
    return step.c_out * predict_x0(z_t, eps, step) + step.c_skip * z_t


def step_map(z_t: torch.Tensor, eps: torch.Tensor, step: LCMStep, noise: torch.Tensor | None) -> torch.Tensor:
    """``S_i(z) = sqrt(abar_next) d + sqrt(1 - abar_next) n_i``; ``noise=None`` takes ``n_i = eps`` (DDIM, eta=0)."""
    d = denoise(z_t, eps, step)
    if step.is_last:
        return d
    n_i = eps if noise is None else noise
    return math.sqrt(step.abar_next) * d + math.sqrt(1.0 - step.abar_next) * n_i


def solve_frozen(y: torch.Tensor, eps: torch.Tensor, step: LCMStep, noise: torch.Tensor | None) -> torch.Tensor:
    """The z with ``S_i(z) = y`` when eps (and, for the deterministic chain, n_i) is held fixed.

    With eps frozen the step map is affine in z: ``S = sqrt(abar_next) (a z - b eps) + sqrt(1 - abar_next) n``,
    with ``a = c_out / sqrt(abar_t) + c_skip`` and ``b = c_out sqrt(1 - abar_t) / sqrt(abar_t)``; solve for z.
    """
    d_target = y
    if not step.is_last:
        n_i = eps if noise is None else noise
        d_target = (y - math.sqrt(1.0 - step.abar_next) * n_i) / math.sqrt(step.abar_next)
    a = step.c_out / math.sqrt(step.abar_t) + step.c_skip
    b = step.c_out * math.sqrt(1.0 - step.abar_t) / math.sqrt(step.abar_t)
    return (d_target + b * eps) / a


def correct_noise(y: torch.Tensor, z_t: torch.Tensor, eps: torch.Tensor, step: LCMStep) -> torch.Tensor:
    """ReNoise-style noise correction: the n_i for which ``S_i(z_t) = y`` exactly."""
    return (y - math.sqrt(step.abar_next) * denoise(z_t, eps, step)) / math.sqrt(1.0 - step.abar_next)


def prior(y: torch.Tensor, step: LCMStep) -> tuple[torch.Tensor, float]:
    """``q(z_t | z_next = y)`` of the variance-preserving forward process."""
    return vp.prior(y, step.abar_t, step.abar_next)


def clean_prior(z0: torch.Tensor, step: LCMStep) -> tuple[torch.Tensor, float]:
    """``q(z_t | z_0)``, the prior of the official RNRI code."""
    return vp.clean_prior(z0, step.abar_t)
