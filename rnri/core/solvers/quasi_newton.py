"""A quasi-Newton solve of each step's root where the root matters, started from DDIM's guess.

Each step asks for z with ``R(z) = S_i(z) - y = 0``. The frozen-eps map ``T`` (DDIM inversion at an iterate) is
Newton's method with the Jacobian of the frozen-eps step; the secant updates of type-II Anderson mixing (Walker &
Ni 2011, multisecant quasi-Newton: on a linear step it is GMRES) correct that Jacobian from the last ``history``
iterates, one UNet forward per iteration and no backward. The iteration goes on while it pays: it stops once an
iteration cuts an item's residual by less than ``pays`` (as a fraction of the best so far) for every item, and the
iterate with the smallest residual is returned.

Where the chain corrects the stored noises afterwards (noise correction), every step but the last is made exact
whatever z is, so only the last step (nearest the data, no noise) is solved: its residual is the reconstruction's
whole error. The others take DDIM's guess, and the inversion costs DDIM + correction plus ``iterations`` + 1
forwards at most.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rnri.core.chain import per_item, solve_frozen
from rnri.core.options import option
from rnri.core.solvers.ddim import ddim_guess
from rnri.core.solvers.fixed_point import anderson_mix
from rnri.core.solvers.problem import StepProblem, StepSolution


@dataclass(frozen=True)
class QuasiNewtonConfig:
    """Options of the quasi-Newton solver."""

    iterations: int = option(
        2, "Iterations per solved step", "Most quasi-Newton iterations, one UNet forward each.", low=1, high=10, step=1
    )
    history: int = option(  # 1: a secant step on the last two iterates
        1, "Secant history", "Earlier iterates each update draws on (Anderson's multisecant).", low=1, high=5, step=1
    )
    pays: float = option(  # stop once no item's residual falls by this fraction of its best in an iteration
        0.05, "Least gain", "Stop once an iteration cuts the residual by less than this fraction.", low=0, high=1
    )

    def __post_init__(self) -> None:
        if self.iterations < 1:
            raise ValueError(f"quasi-newton iterations must be at least 1, got {self.iterations}")
        if self.history < 1:
            raise ValueError(f"history must be at least 1, got {self.history}")
        if not 0.0 <= self.pays < 1.0:
            raise ValueError(f"pays must be in [0, 1), got {self.pays}")


def solve(problem: StepProblem, config: QuasiNewtonConfig) -> StepSolution:
    """DDIM's guess, then secant iterations while they pay; returns the best iterate measured (B, C, H, W)."""
    with torch.no_grad():
        guess = ddim_guess(problem)
        if problem.noise_correction and not problem.step.is_last:  # made exact by the correction at any z
            return StepSolution(guess, None, [], forwards=1, guess=guess)
        return iterate(problem, guess, config)


def iterate(problem: StepProblem, guess: torch.Tensor, config: QuasiNewtonConfig) -> StepSolution:
    """The secant iterations from DDIM's guess; every iterate's residual is measured (one forward each)."""
    z = guess
    s, eps = problem.forward(z)
    residual = problem.relative_residual(s)
    best_z, best_eps, best_r, guess_residual = z, eps, residual, residual
    zs, ts, residuals, forwards = [z], [solve_frozen(problem.y, eps, problem.step, problem.noise)], [residual], 2
    for _ in range(config.iterations):
        z = anderson_mix(zs, ts) if len(zs) > 1 else ts[-1]  # the first step is the plain fixed-point step T(z)
        s, eps = problem.forward(z)
        residual, forwards = problem.relative_residual(s), forwards + 1
        residuals.append(residual)
        paid = residual < (1.0 - config.pays) * best_r  # per item; False for NaN
        better = residual < best_r
        best_z, best_eps = torch.where(per_item(better, z), z, best_z), torch.where(per_item(better, z), eps, best_eps)
        best_r = torch.where(better, residual, best_r)
        if not bool(paid.any()):  # a device read per iteration: the price of stopping when it stops paying
            break
        t_z = solve_frozen(problem.y, eps, problem.step, problem.noise)
        zs, ts = (zs + [z])[-config.history - 1 :], (ts + [t_z])[-config.history - 1 :]
    return StepSolution(best_z, best_eps, residuals, forwards, 0, best_r, guess, guess_residual)
