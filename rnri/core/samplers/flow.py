"""The rectified-flow Euler chain (Liu et al. 2023, Esser et al. 2024; diffusers' ``FlowMatchEulerDiscreteScheduler``),
as FLUX.1 samples.

Notation, as in ``FlowMatchEulerDiscreteScheduler`` and ``FluxPipeline``:
    sigma       the noise level in [0, 1], ``scheduler.sigmas[i]``; the state is ``z = (1 - sigma) x0 + sigma n``
    t           the scheduler's timestep, ``1000 sigma`` (the transformer is given ``t / 1000``)
    v           the transformer's velocity prediction, ``v = n - x0`` (``model_output`` of ``step``)
    x0          the clean latent it implies, ``z - sigma v``
    n           the noise it implies, ``z + (1 - sigma) v``

Euler: ``S_i(z) = z + (sigma_next - sigma) v`` (``step``'s ``sample + dt * model_output``). Written with x0 and n
this is DDIM's step in flow coordinates, ``S_i(z) = (1 - sigma_next) x0 + sigma_next n``, so the chain's "noise" is
the direction term: a stored n_i (after noise correction) takes the place of the predicted n there, as in the DDIM
chain; ``noise=None`` is the stock step. The chain injects no fresh noise (``stochastic_sampling=False``), so the
stock pipeline replays it from ``latents`` alone. The last step ends at ``sigma_next = 0``, on x0.

The chain runs on the latent as the VAE makes it, (B, 16, h, w) for FLUX; ``FluxPipeline`` packs it into 2x2 patches,
(B, h w / 4, 64), which only reorders its entries, so every norm, prior and step here is the same in either layout.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class FlowStep:
    """Noise levels of one Euler step of a rectified flow."""

    t: float  # the scheduler's timestep, 1000 sigma (fractional under a shifted schedule)
    sigma: float  # noise level of the step's input
    sigma_next: float  # noise level of its output; 0 on the last step
    is_last: bool  # the last step ends on the clean latent and takes no stored noise


def predict_x0(z_t: torch.Tensor, v: torch.Tensor, step: FlowStep) -> torch.Tensor:
    """``x0 = z - sigma v``, the clean latent of a velocity prediction."""
    return z_t - step.sigma * v


def predict_noise(z_t: torch.Tensor, v: torch.Tensor, step: FlowStep) -> torch.Tensor:
    """``n = z + (1 - sigma) v``, the noise of a velocity prediction."""
    return z_t + (1.0 - step.sigma) * v


def step_map(z_t: torch.Tensor, v: torch.Tensor, step: FlowStep, noise: torch.Tensor | None) -> torch.Tensor:
    """``S_i(z) = z + (sigma_next - sigma) v``, or ``(1 - sigma_next) x0 + sigma_next n_i`` with a stored n_i."""
    if noise is None:
        return z_t + (step.sigma_next - step.sigma) * v
    return (1.0 - step.sigma_next) * predict_x0(z_t, v, step) + step.sigma_next * noise


def solve_frozen(y: torch.Tensor, v: torch.Tensor, step: FlowStep, noise: torch.Tensor | None) -> torch.Tensor:
    """The z with ``S_i(z) = y`` for v held fixed: ``z = y + (sigma - sigma_next) v`` (the linear velocity guess:
    DDIM inversion of a flow), or with a stored n_i, ``x0 = (y - sigma_next n_i) / (1 - sigma_next)``,
    ``z = x0 + sigma v``."""
    if noise is None:
        return y + (step.sigma - step.sigma_next) * v
    return (y - step.sigma_next * noise) / (1.0 - step.sigma_next) + step.sigma * v


def correct_noise(y: torch.Tensor, z_t: torch.Tensor, v: torch.Tensor, step: FlowStep) -> torch.Tensor:
    """The n_i in the direction term for which ``S_i(z_t) = y`` exactly: ``(y - (1 - sigma_next) x0) / sigma_next``
    (ReNoise-style; the last step, at ``sigma_next = 0``, has no direction term to correct)."""
    if step.sigma_next == 0.0:
        raise ValueError("noise correction needs a step that ends above sigma 0; the last flow step ends on x0")
    return (y - (1.0 - step.sigma_next) * predict_x0(z_t, v, step)) / step.sigma_next


def prior(y: torch.Tensor, step: FlowStep) -> tuple[torch.Tensor, float]:
    """``q(z_t | z_next = y)``, the Gaussian step back that keeps every marginal ``(1 - sigma) x0 + sigma n``:
    ``z = a y + sqrt(sigma^2 - a^2 sigma_next^2) m`` with ``a = (1 - sigma) / (1 - sigma_next)``; at ``sigma = 1``
    it is ``N(0, I)``, and on the last step ``q(z_t | z_0)``."""
    a = (1.0 - step.sigma) / (1.0 - step.sigma_next)
    return a * y, step.sigma**2 - (a * step.sigma_next) ** 2


def clean_prior(z0: torch.Tensor, step: FlowStep) -> tuple[torch.Tensor, float]:
    """``q(z_t | z_0) = N((1 - sigma) z_0, sigma^2 I)``."""
    return (1.0 - step.sigma) * z0, step.sigma**2
