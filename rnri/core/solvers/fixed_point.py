"""Fixed-point inversion (AIDI / ReNoise style): iterate ``z <- T(z)``, T the step solved with eps frozen at z.

Anderson acceleration (Walker & Ni 2011, type II) mixes the last ``anderson`` iterates, with its own weights for
each item of a batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rnri.core.chain import solve_frozen
from rnri.core.options import option
from rnri.core.solvers.ddim import ddim_guess
from rnri.core.solvers.problem import StepProblem, StepSolution


@dataclass(frozen=True)
class FixedPointConfig:
    """Options of the fixed-point solver."""

    iterations: int = option(  # each one application of T
        3, "Fixed-point iterations per step", "UNet evaluations after the DDIM guess.", low=1, high=10, step=1
    )
    anderson: int = option(
        0, "Anderson history", "Iterates Anderson acceleration mixes; 0 is the plain iteration.", low=0, high=5, step=1
    )

    def __post_init__(self) -> None:
        if self.iterations < 1:
            raise ValueError(f"fixed-point iterations must be at least 1, got {self.iterations}")
        if self.anderson < 0:
            raise ValueError(f"anderson must be 0 or more, got {self.anderson}")


def anderson_mix(zs: list[torch.Tensor], ts: list[torch.Tensor]) -> torch.Tensor:
    """Anderson step from iterates ``zs`` and their images ``ts = T(zs)``, each (B, C, H, W), per item."""
    items = [slice(b, b + 1) for b in range(zs[0].shape[0])]
    return torch.cat([anderson_mix_one([z[i] for z in zs], [t[i] for t in ts]) for i in items])


def anderson_mix_one(zs: list[torch.Tensor], ts: list[torch.Tensor]) -> torch.Tensor:
    """Anderson step of one item (1, C, H, W): the least-squares mix of its residuals."""
    # In float64: the residuals of late iterates nearly coincide, so the Gram matrix is close to singular; solved in
    # float32 its weights differed between two runs of the same inversion (python -m rnri_lab.testbeds).
    g = torch.stack([(t - z).flatten().double() for z, t in zip(zs, ts)], dim=1)  # (D, m) residuals
    m = g.shape[1]
    # Minimise ||g alpha|| subject to sum(alpha) = 1 via the normal equations, regularised for safety.
    gram = g.T @ g
    gram = gram + 1e-6 * gram.diagonal().mean().clamp_min(1e-30) * torch.eye(m, dtype=g.dtype, device=g.device)
    alpha = torch.linalg.lstsq(gram, torch.ones(m, 1, dtype=g.dtype, device=g.device)).solution.squeeze(1)
    alpha = (alpha / alpha.sum()).to(ts[-1].dtype)
    if not torch.isfinite(alpha).all():
        return ts[-1]
    return sum(a * t for a, t in zip(alpha, ts))


@torch.no_grad()
def solve(problem: StepProblem, config: FixedPointConfig) -> StepSolution:
    """Start from the DDIM guess, apply T ``iterations`` times; returns the last iterate."""
    z = guess = ddim_guess(problem)
    zs: list[torch.Tensor] = []
    ts: list[torch.Tensor] = []
    residuals = []
    for _ in range(config.iterations):
        s, eps = problem.forward(z)
        residuals.append(problem.relative_residual(s))
        t_z = solve_frozen(problem.y, eps, problem.step, problem.noise)
        zs, ts = (zs + [z])[-config.anderson - 1 :], (ts + [t_z])[-config.anderson - 1 :]
        z = anderson_mix(zs, ts) if config.anderson and len(zs) > 1 else t_z
    return StepSolution(
        z=z, eps=None, residuals=residuals, forwards=1 + config.iterations, guess=guess, guess_residual=residuals[0]
    )
