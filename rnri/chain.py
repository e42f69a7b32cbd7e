"""Sampling as a chain of step maps (DESIGN.md section 1).

Notation, as in the LCM paper and diffusers' ``LCMScheduler``:
    z_t         latent at timestep t, shape (B, C, H, W)
    abar_t      ``alphas_cumprod[t]``
    eps(z, t)   the UNet's noise prediction with the prompt and guidance embedding fixed
    x0          predicted clean latent, ``(z - sqrt(1 - abar_t) eps) / sqrt(abar_t)``
    d           LCM's boundary-conditioned output, ``c_out x0 + c_skip z``
    n_i         the noise injected after step i (stochastic chain) or ``eps(z_i, t_i)`` (deterministic chain)

The chain is ``z_{i+1} = S_i(z_i)``; the last map returns ``d`` itself.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

EpsFn = Callable[[torch.Tensor, int], torch.Tensor]  # (z_t (B, C, H, W), t) -> eps (B, C, H, W)


@dataclass(frozen=True)
class Step:
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


def predict_x0(z_t: torch.Tensor, eps: torch.Tensor, step: Step) -> torch.Tensor:
    """``x0 = (z_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)`` (DDPM Eq. 15)."""
    return (z_t - math.sqrt(1.0 - step.abar_t) * eps) / math.sqrt(step.abar_t)


def denoise(z_t: torch.Tensor, eps: torch.Tensor, step: Step) -> torch.Tensor:
    """LCM's consistency output ``d = c_out x0 + c_skip z_t``."""
    return step.c_out * predict_x0(z_t, eps, step) + step.c_skip * z_t


def step_map(z_t: torch.Tensor, eps: torch.Tensor, step: Step, noise: torch.Tensor | None) -> torch.Tensor:
    """``S_i(z) = sqrt(abar_next) d + sqrt(1 - abar_next) n_i``; ``noise=None`` takes ``n_i = eps`` (DDIM, eta=0)."""
    d = denoise(z_t, eps, step)
    if step.is_last:
        return d
    n_i = eps if noise is None else noise
    return math.sqrt(step.abar_next) * d + math.sqrt(1.0 - step.abar_next) * n_i


def solve_frozen(y: torch.Tensor, eps: torch.Tensor, step: Step, noise: torch.Tensor | None) -> torch.Tensor:
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


def sample(
    eps_fn: EpsFn, steps: list[Step], z_T: torch.Tensor, noises: list[torch.Tensor] | None
) -> list[torch.Tensor]:
    """Run the chain from ``z_T``; returns every latent ``[z_0 = z_T, z_1, ..., z_n = clean]``.

    ``noises`` holds n_i for each non-final step (stochastic chain) or is None (deterministic chain).
    """
    trajectory = [z_T]
    for i, step in enumerate(steps):
        z = trajectory[-1]
        noise = None if noises is None or step.is_last else noises[i]
        trajectory.append(step_map(z, eps_fn(z, step.t), step, noise))
    return trajectory


@dataclass
class ChainInversion:
    """The result of walking a chain backwards from a clean latent."""

    trajectory: list[torch.Tensor]  # [z_T, ..., z_clean] in chain order, each (B, C, H, W)
    noises: list[torch.Tensor | None]  # n_i per step, None where the step uses eps (deterministic) or is last
    residuals: list[list[float]]  # per step, in chain order: relative residual of each iterate evaluated
    forwards: int  # UNet forward passes, by the solvers' own tally
    backwards: int  # UNet backward passes, by the solvers' own tally


def correct_noise(y: torch.Tensor, z: torch.Tensor, eps: torch.Tensor, step: Step) -> torch.Tensor:
    """ReNoise-style noise correction: the n_i for which ``S_i(z) = y`` exactly."""
    return (y - math.sqrt(step.abar_next) * denoise(z, eps, step)) / math.sqrt(1.0 - step.abar_next)
