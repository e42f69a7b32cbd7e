"""What every inverse-step solver takes and returns."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from rnri.core.chain import EpsFn, Step, step_map


class InversionError(FloatingPointError):
    """Inversion met NaN or infinite values it could not recover from (no finite iterate to fall back on)."""


@dataclass
class StepProblem:
    """Find the noisier latent z with ``S_i(z) = y`` for one step of the chain; on a batch, one problem per item,
    solved without mixing items (the eps_fn must treat items independently, as a UNet in eval mode does)."""

    eps_fn: EpsFn  # the UNet's noise prediction, prompt and guidance fixed
    step: Step
    y: torch.Tensor  # z_{i+1}, the known less-noisy latent, (B, C, H, W)
    noise: torch.Tensor | None  # n_i of the stochastic chain, or None for the deterministic chain
    z0: torch.Tensor  # the clean latent being inverted (the official code centres its prior on it)
    previous_noise: torch.Tensor | None = None  # n_{i-1}, the noise the step before injected to make z; None on
    # the first step and on deterministic chains
    noise_correction: bool = False  # the inversion corrects the stored noises, so every step's residual is made
    # exact afterwards but the last's (nearest the data, no noise): its residual is the reconstruction's whole error

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(S_i(z), eps(z, t))``; differentiable in z when z requires grad."""
        eps = self.eps_fn(z, self.step.t)
        return step_map(z, eps, self.step, self.noise), eps

    def relative_residual(self, s: torch.Tensor) -> torch.Tensor:
        """``||S_i(z) - y|| / ||y||`` per item (B,), the numbers recorded in residual histories (no device sync)."""
        norm = torch.linalg.vector_norm
        return norm((s - self.y).flatten(1), dim=1) / norm(self.y.flatten(1), dim=1).clamp_min(1e-12)


@dataclass
class StepSolution:
    """A solver's answer for one step."""

    z: torch.Tensor  # the noisier latent, (B, C, H, W)
    eps: torch.Tensor | None  # eps(z, t) when the solver evaluated it at the returned z, else None
    residuals: list[torch.Tensor] = field(default_factory=list)  # relative residual (B,) of each iterate evaluated
    forwards: int = 0  # UNet forward passes, by the solver's own tally
    backwards: int = 0  # UNet backward passes (vector-Jacobian products)
    residual: torch.Tensor | None = None  # relative residual (B,) of the returned z, where the solver measured it
    guess: torch.Tensor | None = None  # DDIM's guess for this step, where the solver computed it
    guess_residual: torch.Tensor | None = None  # its relative residual (B,), where the solver measured it
