"""The official RNRI code's solver (``inversion_step`` in its SDXL-Turbo pipeline), kept for comparison.

It never differentiates through the UNet: with eps frozen, ``f = |T(z) - z| - lambda log q(T(z) | z_0)`` per
element, whose gradient in z is taken as ``-sign(T(z) - z)`` (Jacobian treated as identity), and the update is
``z <- z - sum(f) / D / grad`` element-wise. It starts from y itself and returns the best ``T(z)`` it saw. Where
the official code divides by a zero gradient entry, this one leaves that entry alone. On a batch, the sums and the
best candidate are per item.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rnri.core.chain import item_sum, per_item, solve_frozen
from rnri.core.options import option
from rnri.core.priors import clean_prior
from rnri.core.solvers.problem import StepProblem, StepSolution


@dataclass(frozen=True)
class JacobianFreeConfig:
    """Options of the official code's solver."""

    iterations: int = option(2, "Iterations per step", "UNet evaluations per step.", low=1, high=10, step=1)
    prior_weight: float = option(0.1, "Prior weight", "alpha in the official code.", low=0, high=1, step=0.01)

    def __post_init__(self) -> None:
        if self.iterations < 1:
            raise ValueError(f"rnri-jf iterations must be at least 1, got {self.iterations}")


@torch.no_grad()
def solve(problem: StepProblem, config: JacobianFreeConfig) -> StepSolution:
    """The official update, element-wise with a sign 'gradient'; returns the best candidate ``T(z)``."""
    mean, var = clean_prior(problem.z0, problem.step)
    z = problem.y
    best_z, best_score, residuals = z, torch.full((z.shape[0],), float("inf"), device=z.device), []
    guess = None
    for _ in range(config.iterations):
        s, eps = problem.forward(z)
        residuals.append(problem.relative_residual(s))
        candidate = solve_frozen(problem.y, eps, problem.step, problem.noise)
        guess = candidate if guess is None else guess  # T(y): DDIM inversion's answer
        log_q = -(candidate - mean).pow(2) / (2.0 * var)
        f = (candidate - z).abs() - config.prior_weight * log_q
        finite, score = torch.isfinite(f).flatten(1).all(1), f.flatten(1).mean(1)
        better = finite & (score < best_score)
        best_z = torch.where(per_item(better, z), candidate, best_z)
        best_score = torch.where(better, score, best_score)
        grad = -torch.sign(candidate - z)  # d|T(z) - z| / dz with dT/dz taken as 0
        safe = torch.where(grad == 0, torch.ones_like(grad), grad)
        z = torch.where(grad == 0, z, z - per_item(item_sum(f) / f[0].numel(), z) / safe)
    best_z = torch.where(per_item(torch.isinf(best_score), z), float("nan"), best_z)  # no finite candidate
    return StepSolution(z=best_z, eps=None, residuals=residuals, forwards=config.iterations, guess=guess)
