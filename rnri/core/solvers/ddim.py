"""DDIM inversion: evaluate eps at the known latent y and solve the step with it frozen (one UNet call)."""

from __future__ import annotations

import torch

from rnri.core.chain import solve_frozen
from rnri.core.solvers.problem import StepProblem, StepSolution


def ddim_guess(problem: StepProblem) -> torch.Tensor:
    """``z = S_i^{-1}(y)`` with ``eps(z) ~ eps(y)``: the classic, biased inversion step."""
    eps_y = problem.eps_fn(problem.y, problem.step.t)
    return solve_frozen(problem.y, eps_y, problem.step, problem.noise)


@torch.no_grad()
def solve(problem: StepProblem, config: None = None) -> StepSolution:
    """One DDIM inversion step; records no residual (that would cost another UNet call)."""
    return StepSolution(z=ddim_guess(problem), eps=None, forwards=1)
