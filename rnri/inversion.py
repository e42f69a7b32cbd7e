"""Walking a chain backwards: one inverse-step solve per step, from the clean latent to z_T."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from rnri.chain import ChainInversion, EpsFn, Step, correct_noise
from rnri.solvers import StepProblem, get_method
from rnri.solvers.problem import InversionError  # raised below; also the public error type

ProgressFn = Callable[[int, int, list[float]], None]  # (steps done, steps in all, residuals of the step solved)


def invert_chain(
    eps_fn: EpsFn,
    steps: list[Step],
    z0: torch.Tensor,
    noises: list[torch.Tensor | None],
    method: str,
    config: Any,
    noise_correction: bool = False,
    callback: ProgressFn | None = None,
) -> ChainInversion:
    """Find ``z_T`` (and, with noise correction, the noises) that the chain maps onto the clean latent ``z0``.

    ``noises[i]`` is n_i of step i (None: the deterministic chain's ``eps``); ``z0`` is (B, C, H, W).
    """
    solve = get_method(method).solve
    noises = list(noises)
    trajectory, residuals = [z0], [[] for _ in steps]
    forwards = backwards = 0
    for done, i in enumerate(reversed(range(len(steps))), start=1):
        step, y = steps[i], trajectory[0]
        solution = solve(StepProblem(eps_fn, step, y, noises[i], z0), config)
        forwards, backwards = forwards + solution.forwards, backwards + solution.backwards
        if noise_correction and not step.is_last:
            eps = solution.eps
            if eps is None:
                with torch.no_grad():
                    eps = eps_fn(solution.z, step.t)
                forwards += 1
            noises[i] = correct_noise(y, solution.z, eps, step)
        trajectory.insert(0, solution.z)
        residuals[i] = solution.residuals
        if callback is not None:  # reading the residuals waits for the device; only when someone listens
            callback(done, len(steps), [r.item() for r in solution.residuals])
    check_finite(method, steps, trajectory, noises)
    history = [torch.stack(r).tolist() if r else [] for r in residuals]  # one device sync for the whole chain
    return ChainInversion(trajectory, noises, history, forwards, backwards)


def check_finite(method: str, steps: list[Step], trajectory: list[torch.Tensor], noises: list) -> None:
    """Raise ``InversionError`` naming the first step whose latent or noise is NaN or infinite."""
    latents_ok = torch.stack([torch.isfinite(z).all() for z in trajectory[:-1]]).tolist()
    noises_ok = [n is None or bool(torch.isfinite(n).all()) for n in noises]
    for step, latent_ok, noise_ok in zip(steps, latents_ok, noises_ok):
        if not (latent_ok and noise_ok):
            raise InversionError(f"{method} produced a non-finite latent at timestep {step.t}")
