"""Never worse than DDIM, never NaN: a step whose answer is not finite, or whose residual is worse than DDIM
inversion's guess, takes DDIM's guess instead (per item of a batch), and says so.

What the guard compares is the step's own residual ``||S_i(z) - y|| / ||y||`` with the chain's noise, before any
noise correction: correction would make a corrected step exact at any z, however far out of distribution z went,
so the residual before it is what tells a solved step from a wild one. The guard spends a UNet forward only on what
the solver did not measure (DDIM's guess, its residual, the residual of the answer) and none where the answer is
DDIM's guess itself.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from rnri.core.chain import per_item
from rnri.core.solvers.ddim import ddim_guess
from rnri.core.solvers.problem import StepProblem, StepSolution

KEPT, NOT_FINITE, WORSE = 0, 1, 2  # per item: the solver's answer kept, or DDIM's guess taken, and why
REASONS = {NOT_FINITE: "met a non-finite value", WORSE: "left a larger residual than DDIM's guess"}


@dataclass
class Guarded:
    """A step's solution after the guard, what it decided per item, and the forwards it spent."""

    solution: StepSolution
    verdict: torch.Tensor  # (B,) int: KEPT, NOT_FINITE or WORSE
    solver_residual: torch.Tensor | None  # (B,) the solver's own answer's residual, where measured
    guess_residual: torch.Tensor | None  # (B,) DDIM's guess's residual, where measured
    forwards: int


def measured(problem: StepProblem, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(relative residual (B,), eps(z)) of z: one forward."""
    with torch.no_grad():
        s, eps = problem.forward(z)
    return problem.relative_residual(s), eps


def safeguard(problem: StepProblem, solution: StepSolution) -> Guarded:
    """``solution``, or per item DDIM's guess where the solution is not finite or its residual is larger."""
    z, forwards = solution.z, 0
    if solution.guess is not None and solution.z is solution.guess:  # the answer is DDIM's guess: nothing to check
        return Guarded(solution, torch.full((z.shape[0],), KEPT, dtype=torch.long, device=z.device), None, None, 0)
    finite = torch.isfinite(z).flatten(1).all(1)
    residual, eps = solution.residual, solution.eps
    if residual is None:
        residual, eps = measured(problem, z)
        forwards += 1
    guess, guess_residual, guess_eps = solution.guess, solution.guess_residual, None
    if guess is None:
        with torch.no_grad():
            guess = ddim_guess(problem)
        forwards += 1
    if guess_residual is None:
        guess_residual, guess_eps = measured(problem, guess)
        forwards += 1
    worse = ~(residual <= guess_residual)  # a NaN residual counts as worse
    verdict = torch.where(~finite, NOT_FINITE, torch.where(worse, WORSE, KEPT))
    chosen = replace(solution, eps=eps, residual=torch.where(verdict == KEPT, residual, guess_residual))
    return Guarded(taken(chosen, guess, guess_eps, verdict), verdict, residual, guess_residual, forwards)


def taken(
    solution: StepSolution, guess: torch.Tensor, guess_eps: torch.Tensor | None, verdict: torch.Tensor
) -> StepSolution:
    """``solution`` with DDIM's guess in the items whose verdict is not KEPT; eps at the chosen latents where known
    (else None, and the chain evaluates it if it needs it)."""
    use_guess = verdict != KEPT
    z = torch.where(per_item(use_guess, solution.z), guess, solution.z)
    eps = solution.eps
    if eps is not None and guess_eps is not None:
        eps = torch.where(per_item(use_guess, eps), guess_eps, eps)
    elif eps is not None and bool(use_guess.any()):
        eps = None
    return replace(solution, z=z, eps=eps)
