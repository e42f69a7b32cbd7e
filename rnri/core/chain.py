"""Sampling as a chain of step maps (docs/architecture.md, "The math"), whatever the sampler.

The chain is ``z_{i+1} = S_i(z_i)``; the last map returns the clean latent. Each step is a frozen dataclass of one
chain family (``rnri.core.samplers.lcm``, ``ddim``, ``euler``, ``flow``), and the functions below apply that family's
math to it, so that the solvers, priors and masks never know which family they work on.

Notation:
    z_t         the chain's latent at timestep t, the UNet's input, shape (B, C, H, W); each of the B items is its
                own chain (its own prompt and noises), and every norm, step size and choice is taken per item
    eps(z, t)   the denoiser's prediction with the prompt and guidance fixed: a UNet's noise, or on a rectified
                flow (FLUX) the transformer's velocity; each family's step map reads its own kind
    n_i         the noise injected after step i, or None for the step's deterministic form
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType

import torch

from rnri.core.samplers import ddim, euler, flow, lcm
from rnri.core.samplers.ddim import DDIMStep
from rnri.core.samplers.euler import EulerStep
from rnri.core.samplers.flow import FlowStep
from rnri.core.samplers.lcm import LCMStep, denoise, predict_x0

EpsFn = Callable[[torch.Tensor, float], torch.Tensor]  # (z_t (B, C, H, W), t) -> eps (B, C, H, W)
Step = LCMStep | DDIMStep | EulerStep | FlowStep  # one step map of any chain family

FAMILIES: dict[type, ModuleType] = {LCMStep: lcm, DDIMStep: ddim, EulerStep: euler, FlowStep: flow}  # type -> module


def item_sum(x: torch.Tensor) -> torch.Tensor:
    """The sum over each item of a batch: (B, ...) -> (B,); a vector (no batch dimension) is one item: ()."""
    return x.flatten(1).sum(1) if x.ndim > 1 else x.sum()


def item_mean(x: torch.Tensor) -> torch.Tensor:
    """The mean over each item of a batch: (B, ...) -> (B,); a vector (no batch dimension) is one item: ()."""
    return x.flatten(1).mean(1) if x.ndim > 1 else x.mean()


def per_item(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A value per item (B,) shaped to broadcast against ``like`` (B, C, H, W): (B, 1, 1, 1)."""
    return v.reshape(-1, *([1] * (like.ndim - 1)))


def family(step: Step) -> ModuleType:
    """The module of pure functions that ``step`` belongs to."""
    return FAMILIES[type(step)]


def step_map(z_t: torch.Tensor, eps: torch.Tensor, step: Step, noise: torch.Tensor | None) -> torch.Tensor:
    """``S_i(z_t)`` given ``eps(z_t, t)`` and the stored noise n_i (None: the deterministic form)."""
    return family(step).step_map(z_t, eps, step, noise)


def solve_frozen(y: torch.Tensor, eps: torch.Tensor, step: Step, noise: torch.Tensor | None) -> torch.Tensor:
    """The z with ``S_i(z) = y`` when eps (and n_i) is held fixed."""
    return family(step).solve_frozen(y, eps, step, noise)


def correct_noise(y: torch.Tensor, z: torch.Tensor, eps: torch.Tensor, step: Step) -> torch.Tensor:
    """ReNoise-style noise correction: the n_i for which ``S_i(z) = y`` exactly."""
    return family(step).correct_noise(y, z, eps, step)


def sample(
    eps_fn: EpsFn, steps: list[Step], z_T: torch.Tensor, noises: list[torch.Tensor | None] | None
) -> list[torch.Tensor]:
    """Run the chain from ``z_T``; returns every latent ``[z_0 = z_T, z_1, ..., z_n = clean]``.

    ``noises`` holds n_i for each non-final step (stochastic chain) or is None (deterministic chain).
    """
    trajectory = [z_T]
    for i, step in enumerate(steps):
        z = trajectory[-1]
        noise = None if noises is None or step.is_last else noises[i]
        trajectory.append(step_map(z, eps_fn(z, step.t), step, noise))
    return trajectory


@dataclass
class ChainInversion:
    """The result of walking a chain backwards from a clean latent."""

    trajectory: list[torch.Tensor]  # [z_T, ..., z_clean] in chain order, each (B, C, H, W)
    noises: list[torch.Tensor | None]  # n_i per step, None where the step uses eps (deterministic) or is last
    residuals: list[list[list[float]]]  # per item, per step (chain order): relative residual of each iterate
    forwards: int  # UNet forward passes, by the solvers' own tally
    backwards: int  # UNet backward passes, by the solvers' own tally
    fallbacks: list[list[str]] = field(default_factory=list)  # per item: the steps where DDIM's guess was taken


__all__ = [
    "ChainInversion",
    "DDIMStep",
    "EpsFn",
    "EulerStep",
    "FlowStep",
    "LCMStep",
    "Step",
    "correct_noise",
    "denoise",
    "family",
    "item_mean",
    "item_sum",
    "per_item",
    "predict_x0",
    "sample",
    "solve_frozen",
    "step_map",
]
