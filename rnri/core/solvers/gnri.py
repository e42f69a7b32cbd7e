"""Guided Newton-Raphson Inversion as the paper writes it: Samuel et al., "Lightning-Fast Image Inversion and Editing
for Text-to-Image Diffusion Models" (ICLR 2025; arXiv 2312.12540v5), Eq. 9 and 10, nothing added (eta = 1e-4 and
lambda = 0.1, the official code's prior weight, by default).

Notation (the paper's; one step of the chain, from the known less noisy latent to the noisier one):
    z_{t-1}         y, the known latent (``problem.y``)
    f(z_t)          the implicit inversion map: the step solved for z_t with eps evaluated at z_t (``solve_frozen``),
                    so an inverse is a root of the residual ``z_t - f(z_t)``; ``f(z_{t-1})`` is DDIM inversion
    mu_t, beta_t    mean and variance of the forward step ``q(z_t | z_{t-1})`` (``forward_prior``: over a step of
                    the sampling schedule, ``sqrt(abar_t / abar_{t-1}) z_{t-1}`` and ``1 - abar_t / abar_{t-1}``)
    D               the number of elements of z_t

    F(z_t) = ||z_t - f(z_t)||_1 + lambda (1 / beta_t) ||z_t - mu_t||_2          Eq. 9
    z_t[i] <- z_t[i] - (1 / D) F(z_t) / (g[i] + eta),   g = grad F(z_t)          Eq. 10

g comes from autograd through the UNet (one forward and one backward per iteration). The first iterate is z_{t-1};
the paper runs two iterations and the result is the last iterate. On a batch every item is its own equation (F, D
and the step per item). A step that adds no noise (beta_t = 0) has no guidance term (1 / beta_t is undefined).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rnri.core.chain import item_sum, per_item, solve_frozen
from rnri.core.options import option
from rnri.core.priors import forward_prior
from rnri.core.solvers.problem import StepProblem, StepSolution


@dataclass(frozen=True)
class GuidedNewtonConfig:
    """Options of the paper's solver; the defaults are the paper's setting (eta: see ``eta``)."""

    iterations: int = option(  # the paper: 2
        2, "Newton iterations per step", "Each costs one UNet forward and one backward.", low=1, high=10, step=1
    )
    guidance_weight: float = option(  # lambda of Eq. 9; 0.1, as the official code's alpha
        0.1, "Guidance weight λ", "Weight of the pull towards the forward step's mean (Eq. 9).", low=0, high=10
    )
    eta: float = option(  # eta of Eq. 10: keeps the division defined where a gradient entry is 0
        1e-4, "η", "Added to each gradient entry before dividing by it (Eq. 10).", low=0, high=1
    )

    def __post_init__(self) -> None:
        if self.iterations < 1:
            raise ValueError(f"gnri iterations must be at least 1, got {self.iterations}")
        if not self.guidance_weight >= 0.0:
            raise ValueError(f"guidance_weight must be a number >= 0, got {self.guidance_weight}")
        if not self.eta >= 0.0:
            raise ValueError(f"eta must be a number >= 0, got {self.eta}")


def objective(
    problem: StepProblem, z_t: torch.Tensor, config: GuidedNewtonConfig
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``F(z_t)`` per item (B,) (Eq. 9), ``f(z_t)`` and the relative residual ``||S_i(z_t) - y|| / ||y||`` (B,)."""
    s, eps = problem.forward(z_t)
    f_z = solve_frozen(problem.y, eps, problem.step, problem.noise)  # f(z_t)
    mu_t, beta_t = forward_prior(problem.y, problem.step)
    residual = item_sum((z_t - f_z).abs())  # ||z_t - f(z_t)||_1
    guidance = torch.linalg.vector_norm((z_t - mu_t).flatten(1), dim=1) / beta_t if beta_t > 0 else 0.0
    return residual + config.guidance_weight * guidance, f_z.detach(), problem.relative_residual(s.detach())


def solve(problem: StepProblem, config: GuidedNewtonConfig) -> StepSolution:
    """``iterations`` steps of Eq. 10 from ``z_{t-1}``; returns the last iterate (and DDIM's guess, ``f(z_{t-1})``)."""
    z_t, guess, residuals = problem.y, None, []
    per_element = 1.0 / problem.y[0].numel()  # 1 / D
    for _ in range(config.iterations):
        z_t = z_t.detach().requires_grad_(True)
        with torch.enable_grad():
            f, f_z, residual = objective(problem, z_t, config)
            (g,) = torch.autograd.grad(f.sum(), z_t)  # items are independent: each gets the gradient of its own F
        guess = f_z if guess is None else guess  # f(z_{t-1}): DDIM inversion's answer, free on the first iteration
        residuals.append(residual)
        z_t = z_t.detach() - per_item(per_element * f.detach(), z_t) / (g + config.eta)  # Eq. 10
    iterations = config.iterations
    return StepSolution(z_t, None, residuals, forwards=iterations, backwards=iterations, guess=guess)
