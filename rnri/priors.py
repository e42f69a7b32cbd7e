"""Gaussian priors that keep an inverted latent in distribution."""

from __future__ import annotations

import math

import torch

from rnri.chain import Step


def forward_prior(y: torch.Tensor, step: Step) -> tuple[torch.Tensor, float]:
    """Mean and variance of ``q(z_t | z_next) = N(sqrt(abar_t / abar_next) y, (1 - abar_t / abar_next) I)``.

    On the last step ``abar_next = 1`` and y is the clean latent, so this is ``q(z_t | z_0)``.
    """
    return math.sqrt(step.abar_t / step.abar_next) * y, step.prior_var


def clean_prior(z0: torch.Tensor, step: Step) -> tuple[torch.Tensor, float]:
    """``q(z_t | z_0) = N(sqrt(abar_t) z_0, (1 - abar_t) I)``, the prior of the official RNRI code."""
    return math.sqrt(step.abar_t) * z0, 1.0 - step.abar_t


def gaussian_nll(z: torch.Tensor, mean: torch.Tensor, var: float) -> torch.Tensor:
    """Negative log-likelihood per element of z under ``N(mean, var I)``, the constant dropped: shape ()."""
    return (z - mean).pow(2).mean() / (2.0 * var)
