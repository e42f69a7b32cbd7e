"""This project's regularized Newton solver, method ``"rnri"``: the idea of Regularized Newton-Raphson Inversion
(Samuel et al.: Newton-Raphson on a scalar residual with a prior's pull), in a formulation of its own. It is not the
paper's Eq. 9-10 (that is ``rnri.core.solvers.gnri``, method ``"gnri"``) nor its official code (``"rnri-jf"``).

One scalar equation in many unknowns, ``F(z) = ||S_i(z) - y|| + lambda G(z) = 0``, solved by the minimum-norm
Newton step ``z <- z - F(z) grad F / ||grad F||^2`` with ``grad F`` from autograd through the UNet (one forward
and one backward per iteration), or, by default, by Newton's method on the line ``z + alpha p`` along the
fixed-point direction p, where only the slope ``grad F . p`` is needed: a forward difference gives it for one
more forward and no backward (``derivative="difference"``). G is the Gaussian negative log-likelihood of z under
the forward-process prior ``q(z_t | z_next)``, measured from its expected value so that a typical sample, not the
mode, is the target.

On a batch (B, C, H, W) every item is its own equation: F, its slope, the step length and the choice of the best
iterate are per item, so one item's step never moves another, and a batch gives each item's single-item answer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from rnri.core.chain import item_mean, item_sum, per_item, solve_frozen
from rnri.core.options import check_choices, option
from rnri.core.priors import forward_prior, gaussian_nll
from rnri.core.solvers.ddim import ddim_guess
from rnri.core.solvers.problem import StepProblem, StepSolution

NORMS = ("l2", "l1")
INITS = ("auto", "ddim", "prior", "chain", "chain-ddim")
DERIVATIVES = ("autograd", "difference")
DIRECTIONS = ("fixed-point", "gradient")
TINY = 1e-30  # guards divisions whose result is discarded where the divisor is zero
PRIORS = ("typical", "nll")


@dataclass(frozen=True)
class NewtonConfig:
    """Options of this project's Newton solver (docs/solver-choice.md measures them)."""

    iterations: int = option(
        1,
        "Newton iterations per step",
        "Each costs two UNet forwards (or a forward and a backward).",
        low=1,
        high=5,
        step=1,
    )
    prior_weight: float = option(  # lambda, weight of the prior term G
        0.1, "Prior weight λ", "Weight of the Gaussian prior that keeps z in distribution.", low=0, high=1, step=0.01
    )
    norm: str = option(
        "l2", "Residual norm", "l2 (root mean square) or l1 (mean absolute value, the paper's norm).", choices=NORMS
    )
    prior: str = option(  # G: |NLL - E[NLL]| per element, or the NLL itself
        "typical", "Prior term", "typical: |NLL - E[NLL]| per element; nll: the NLL itself.", choices=PRIORS
    )
    init: str = option(  # "auto": "chain" where the step before's noise is known, "ddim" on deterministic (eta = 0)
        # steps and on the z_T step under noise correction, "prior" elsewhere (docs/solver-choice.md, "Robustness")
        "auto",
        "First iterate",
        "ddim (one UNet call), prior (its mean, free), chain (from the step before's output and noise, free), "
        "chain-ddim (chain, else ddim), or auto (by step).",
        choices=INITS,
    )
    direction: str = option(
        "fixed-point", "Search direction", "fixed-point (T(z) - z) or gradient (minimum-norm).", choices=DIRECTIONS
    )
    max_step: float = option(
        4.0, "Largest step", "Largest multiple of the fixed-point direction taken at once.", low=0.1, high=16
    )
    damping: float = option(1.0, "Damping", "Fraction of the Newton step taken.", low=0.01, high=1)
    derivative: str = option(  # difference: (F(z + h p) - F(z)) / h, no activations kept; autograd: grad F exactly
        "difference", "Slope", "difference (one more forward) or autograd (one backward).", choices=DERIVATIVES
    )
    difference_step: float = option(
        0.1, "Difference step h", "h, as a fraction of the fixed-point step p.", low=0.001, high=1
    )
    final_iterations: int = option(  # the last step's residual is all the reconstruction error noise correction leaves
        0,
        "Final-step iterations",
        "With noise correction, iterations on the last step (nearest the data); 0: as iterations.",
        low=0,
        high=10,
        step=1,
    )

    def __post_init__(self) -> None:
        if self.iterations < 1:
            raise ValueError(f"rnri iterations must be at least 1, got {self.iterations}")
        if self.final_iterations < 0:
            raise ValueError(f"rnri final_iterations must be at least 0, got {self.final_iterations}")
        if not self.prior_weight >= 0.0:
            raise ValueError(f"prior_weight must be a number >= 0, got {self.prior_weight}")
        if not 0.0 < self.damping <= 1.0:
            raise ValueError(f"damping must be in (0, 1], got {self.damping}")
        if not 0.0 < self.difference_step <= 1.0:
            raise ValueError(f"difference_step must be in (0, 1], got {self.difference_step}")
        if self.derivative == "difference" and self.direction != "fixed-point":
            raise ValueError(
                "derivative='difference' needs direction='fixed-point' (it differentiates along it); "
                "direction='gradient' needs derivative='autograd'"
            )
        check_choices(self)  # norm, prior, init, direction, derivative: the choices their options list


def residual_norm(r: torch.Tensor, norm: str) -> torch.Tensor:
    """Size of the residual per element, per item (B,): root mean square (l2) or mean absolute value (l1)."""
    return item_mean(r.pow(2)).sqrt() if norm == "l2" else item_mean(r.abs())


def objective(
    problem: StepProblem, z: torch.Tensor, config: NewtonConfig
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``F(z) = ||S_i(z) - y|| + lambda G(z)`` per item (B,), the relative residual of z (B,), and eps(z)."""
    s, eps = problem.forward(z)
    mean, var = forward_prior(problem.y, problem.step)
    g = gaussian_nll(z, mean, var)
    if config.prior == "typical":
        g = (g - 0.5).abs()  # E[NLL per element] = 1/2 for z drawn from the prior itself
    f = residual_norm(s - problem.y, config.norm) + config.prior_weight * g
    return f, problem.relative_residual(s.detach()), eps.detach()


def newton_update(z: torch.Tensor, f: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """Minimum-norm step ``z - F grad / ||grad||^2`` per item; z itself where the gradient is zero or not finite."""
    grad_sq = item_sum(grad.pow(2))
    defined = torch.isfinite(grad_sq) & (grad_sq > 0)
    return torch.where(per_item(defined, z), z - per_item(f / grad_sq.clamp_min(TINY), z) * grad, z)


def newton_along(
    z: torch.Tensor, f: torch.Tensor, grad: torch.Tensor, p: torch.Tensor, max_step: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Newton step on the line ``z + alpha p``: ``F + alpha grad.p = 0``, alpha in (0, max_step].

    Returns the step and whether it is defined (p must descend: ``grad.p < 0``), per item (B,).
    """
    alpha, descends = line_step(f, item_sum(grad * p), max_step)
    return z + per_item(alpha, z) * p, descends


def line_step(f: torch.Tensor, slope: torch.Tensor, max_step: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The root ``alpha = -F / slope`` of the line's linear model, capped at ``max_step``, and whether the line
    descends (``slope < 0`` and finite), each per item (B,); alpha is meaningless where it does not."""
    descends = torch.isfinite(slope) & (slope < 0)
    return (-f / slope.clamp(max=-TINY)).clamp(max=max_step), descends


def initial_guess(problem: StepProblem, init: str) -> tuple[torch.Tensor, int]:
    """The first iterate and the UNet forwards it cost."""
    if init == "auto":
        deterministic = problem.noise is None and not problem.step.is_last
        if problem.previous_noise is not None:
            init = "chain"
        else:
            init = "ddim" if deterministic or (problem.noise_correction and not problem.step.is_last) else "prior"
    with torch.no_grad():
        if init == "ddim":
            return ddim_guess(problem), 1
        if init.startswith("chain") and problem.previous_noise is not None:
            return chain_guess(problem), 0
        if init == "chain-ddim":
            return ddim_guess(problem), 1
        return forward_prior(problem.y, problem.step)[0], 0


def chain_guess(problem: StepProblem) -> torch.Tensor:
    """``z_i = sqrt(abar_t) d + sqrt(1 - abar_t) n_{i-1}``: the step before made z_i from its output d and its noise;
    a consistency model's outputs agree along a trajectory, so d is taken as this step's target output."""
    step = problem.step
    d_target = (
        problem.y
        if step.is_last
        else (problem.y - math.sqrt(1 - step.abar_next) * problem.noise) / math.sqrt(step.abar_next)
    )
    return math.sqrt(step.abar_t) * d_target + math.sqrt(1 - step.abar_t) * problem.previous_noise


def next_iterate(
    problem: StepProblem, z: torch.Tensor, f: torch.Tensor, eps: torch.Tensor, grad: torch.Tensor, config: NewtonConfig
) -> torch.Tensor:
    """One damped Newton step from z, along the fixed-point direction where it descends, else the gradient."""
    step = newton_update(z, f, grad)
    if config.direction == "fixed-point":  # the frozen-eps (DDIM) Jacobian as preconditioner
        p = solve_frozen(problem.y, eps, problem.step, problem.noise) - z
        along, descends = newton_along(z, f, grad, p, config.max_step)
        step = torch.where(per_item(descends, z), along, step)
    return z + config.damping * (step - z)


def difference_iterate(
    problem: StepProblem, z: torch.Tensor, f: torch.Tensor, eps: torch.Tensor, config: NewtonConfig
) -> torch.Tensor:
    """One Newton step along the fixed-point direction p with the slope ``(F(z + h p) - F(z)) / h``: forwards only.

    Where F does not descend along p, the whole fixed-point step ``z + p`` is taken (the best iterate is kept).
    """
    p = solve_frozen(problem.y, eps, problem.step, problem.noise) - z
    h = config.difference_step
    alpha, descends = line_step(f, (objective(problem, z + h * p, config)[0] - f) / h, config.max_step)
    return z + config.damping * per_item(torch.where(descends, alpha, 1.0), z) * p


def solve(problem: StepProblem, config: NewtonConfig) -> StepSolution:
    """Newton iterations from the initial guess; the iterate with the smallest F is returned.

    Nothing here waits for the device: the best iterate is selected with tensor ops (per item), so on a GPU the UNet
    calls queue back to back. Where an item's F is never finite its returned z is NaN, which the chain's guard
    replaces by DDIM's guess.
    """
    z, forwards = initial_guess(problem, config.init)
    by_difference = config.derivative == "difference"
    guess = z if forwards == 1 else None  # the first iterate is DDIM's guess (the one start that costs a call)
    best_z, best_eps = torch.full_like(z, float("nan")), torch.full_like(z, float("nan"))
    best_f, residuals = torch.full((z.shape[0],), float("inf"), device=z.device), []
    best_residual = torch.full_like(best_f, float("nan"))
    final = problem.noise_correction and problem.step.is_last and config.final_iterations
    iterations = config.final_iterations if final else config.iterations
    for k in range(iterations + 1):
        last = k == iterations
        needs_grad = not (last or by_difference)
        z = z.detach().requires_grad_(needs_grad)
        with torch.set_grad_enabled(needs_grad):
            f, residual, eps = objective(problem, z, config)
        residuals.append(residual)
        better = f.detach() < best_f  # per item; False for NaN
        kept = per_item(better, z)
        best_z, best_eps = torch.where(kept, z.detach(), best_z), torch.where(kept, eps, best_eps)
        best_f = torch.where(better, f.detach(), best_f)
        best_residual = torch.where(better, residual, best_residual)
        if last:
            break
        if by_difference:
            with torch.no_grad():
                z = difference_iterate(problem, z, f, eps, config)
        else:
            (grad,) = torch.autograd.grad(f.sum(), z)  # items are independent: each gets the gradient of its own F
            z = next_iterate(problem, z.detach(), f.detach(), eps, grad, config)
    forwards, backwards = (
        forwards + iterations + 1 + (iterations if by_difference else 0),
        (0 if by_difference else iterations),
    )
    guess_residual = residuals[0] if guess is not None else None
    return StepSolution(best_z, best_eps, residuals, forwards, backwards, best_residual, guess, guess_residual)
