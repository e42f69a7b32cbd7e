"""Gaussian priors that keep an inverted latent in distribution, for a step of any chain family."""

from __future__ import annotations

import torch

from rnri.core.chain import Step, family, item_mean


def forward_prior(y: torch.Tensor, step: Step) -> tuple[torch.Tensor, float]:
    """Mean and variance of the forward process one step back, ``q(z_t | z_next = y)``.

    Variance preserving: ``N(sqrt(abar_t / abar_next) y, (1 - abar_t / abar_next) I)``; on a step that ends on the
    clean latent this is ``q(z_t | z_0)``. Each chain family writes it in its own terms.
    """
    return family(step).prior(y, step)


def clean_prior(z0: torch.Tensor, step: Step) -> tuple[torch.Tensor, float]:
    """``q(z_t | z_0) = N(sqrt(abar_t) z_0, (1 - abar_t) I)``, the prior of the official RNRI code."""
    return family(step).clean_prior(z0, step)


def gaussian_nll(z: torch.Tensor, mean: torch.Tensor, var: float) -> torch.Tensor:
    """Negative log-likelihood per element of z under ``N(mean, var I)``, the constant dropped, per item: (B,).

    A step that adds no noise (``var = 0``: e.g. DDIM's last step from ``t = 0`` onto ``alphas_cumprod[0]`` with
    ``set_alpha_to_one=False``) has no density to regularize with: its term is 0, not a division by zero.
    """
    if var <= 0.0:
        return item_mean(torch.zeros_like(z))
    return item_mean((z - mean).pow(2)) / (2.0 * var)
