"""The Euler and Euler-ancestral chains on sigmas (Karras et al. 2022; k-diffusion's ``sample_euler`` and
``sample_euler_ancestral``; diffusers' ``EulerDiscreteScheduler`` and ``EulerAncestralDiscreteScheduler``), as
SD-Turbo and SDXL-Turbo sample.

Notation, as in k-diffusion:
    sigma       the noise level, ``sqrt((1 - abar_t) / abar_t)``; the scheduler's state is ``x = x0 + sigma eps``
    z           the chain's state, the UNet's input ``x / sqrt(1 + sigma^2)`` (the scheduler's ``scale_model_input``)
    x0          ``x - sigma eps``, the denoised latent of an eps-prediction
    sigma_up    the standard deviation of the noise injected after the step, ``sqrt(s'^2 (s^2 - s'^2) / s^2)``
    sigma_down  the noise level the deterministic part steps to, ``sqrt(s'^2 - sigma_up^2)``  (s' = sigma_next)

Euler ancestral: ``x' = x + (sigma_down - sigma) eps + sigma_up n_i = x0 + sigma_down eps + sigma_up n_i``.
Euler (no stored noise): ``x' = x + (sigma_next - sigma) eps = x0 + sigma_next eps``, which in z is DDIM's step.
Every chain here ends at ``sigma_next = 0``, where z and x agree and the output is clean.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class EulerStep:
    """Noise levels of one Euler (``sigma_up = 0``) or Euler-ancestral step."""

    t: int  # timestep the UNet is evaluated at
    sigma: float  # noise level of the step's input
    sigma_next: float  # noise level of its output; 0 on the last step
    sigma_up: float  # standard deviation of the injected noise; 0 for Euler, and on the last step
    is_last: bool  # the last step ends on the clean latent

    @property
    def abar_t(self) -> float:
        """``alphas_cumprod`` of the step's input noise level, ``1 / (1 + sigma^2)``."""
        return 1.0 / (1.0 + self.sigma**2)

    @property
    def abar_next(self) -> float:
        """``alphas_cumprod`` of its output noise level, ``1 / (1 + sigma_next^2)``: 1 on the last step."""
        return 1.0 / (1.0 + self.sigma_next**2)

    @property
    def sigma_down(self) -> float:
        """The noise level the deterministic part of an ancestral step reaches, ``sqrt(s'^2 - sigma_up^2)``."""
        return math.sqrt(max(self.sigma_next**2 - self.sigma_up**2, 0.0))


def ancestral_sigmas(sigma: float, sigma_next: float) -> tuple[float, float]:
    """``(sigma_up, sigma_down)`` of an ancestral step with eta = 1 (k-diffusion's ``get_ancestral_step``)."""
    sigma_up = math.sqrt(sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2)
    return sigma_up, math.sqrt(sigma_next**2 - sigma_up**2)


def to_sigma_space(z: torch.Tensor, sigma: float) -> torch.Tensor:
    """``x = z sqrt(1 + sigma^2)``: the UNet's input back in the scheduler's coordinates."""
    return z * math.sqrt(1.0 + sigma**2)


def from_sigma_space(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """``z = x / sqrt(1 + sigma^2)``, the scheduler's ``scale_model_input``."""
    return x / math.sqrt(1.0 + sigma**2)


def _direction(eps: torch.Tensor, step: EulerStep, noise: torch.Tensor | None) -> torch.Tensor:
    """``x' - x0``: ``sigma_next eps`` (Euler) or ``sigma_down eps + sigma_up n_i`` (ancestral, a noise stored)."""
    if noise is None:
        return step.sigma_next * eps
    return step.sigma_down * eps + step.sigma_up * noise


def step_map(z_t: torch.Tensor, eps: torch.Tensor, step: EulerStep, noise: torch.Tensor | None) -> torch.Tensor:
    """``S_i(z) = (x0 + direction) / sqrt(1 + sigma_next^2)`` with ``x0 = z sqrt(1 + sigma^2) - sigma eps``."""
    x0 = to_sigma_space(z_t, step.sigma) - step.sigma * eps
    return from_sigma_space(x0 + _direction(eps, step, noise), step.sigma_next)


def solve_frozen(y: torch.Tensor, eps: torch.Tensor, step: EulerStep, noise: torch.Tensor | None) -> torch.Tensor:
    """The z with ``S_i(z) = y`` for eps held fixed: ``x0 = x' - direction``, ``x = x0 + sigma eps``."""
    x0 = to_sigma_space(y, step.sigma_next) - _direction(eps, step, noise)
    return from_sigma_space(x0 + step.sigma * eps, step.sigma)


def correct_noise(y: torch.Tensor, z_t: torch.Tensor, eps: torch.Tensor, step: EulerStep) -> torch.Tensor:
    """The n_i for which the ancestral step lands exactly on y: ``(x' - x0 - sigma_down eps) / sigma_up``."""
    if step.sigma_up == 0.0:
        raise ValueError(
            "noise correction needs a step that injects noise (Euler ancestral); this Euler step has none"
        )
    x0 = to_sigma_space(z_t, step.sigma) - step.sigma * eps
    return (to_sigma_space(y, step.sigma_next) - x0 - step.sigma_down * eps) / step.sigma_up


def prior(y: torch.Tensor, step: EulerStep) -> tuple[torch.Tensor, float]:
    """``q(z_t | z_next = y)``: in sigma space ``x = x' + sqrt(sigma^2 - sigma_next^2) n``, then scaled to z:
    mean ``sqrt((1 + sigma_next^2) / (1 + sigma^2)) y``, variance ``(sigma^2 - sigma_next^2) / (1 + sigma^2)``."""
    scale = 1.0 + step.sigma**2
    return math.sqrt((1.0 + step.sigma_next**2) / scale) * y, (step.sigma**2 - step.sigma_next**2) / scale


def clean_prior(z0: torch.Tensor, step: EulerStep) -> tuple[torch.Tensor, float]:
    """``q(z_t | z_0)``: ``x = x0 + sigma n`` scaled to z, ``N(z_0 / sqrt(1 + sigma^2), sigma^2 / (1 + sigma^2))``."""
    scale = 1.0 + step.sigma**2
    return z0 / math.sqrt(scale), step.sigma**2 / scale
