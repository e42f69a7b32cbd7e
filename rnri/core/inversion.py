"""Walking a chain backwards: one inverse-step solve per step, from the clean latent to z_T."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from rnri.core.chain import ChainInversion, EpsFn, Step, correct_noise
from rnri.core.solvers import StepProblem, get_method
from rnri.core.solvers.guard import KEPT, REASONS, Guarded, safeguard
from rnri.core.solvers.problem import InversionError  # raised below; also the public error type

ProgressFn = Callable[[int, int, list[float]], None]  # (steps done, steps in all, residuals of the step solved:
# per iterate, the largest over a batch's items)


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

    ``noises[i]`` is n_i of step i (None: the deterministic chain's ``eps``); ``z0`` is (B, C, H, W), and each of
    the B items is inverted as if alone (each UNet call takes the whole batch).
    """
    chosen = get_method(method)
    noises = list(noises)
    trajectory, residuals, guarded = [z0], [[] for _ in steps], [None for _ in steps]
    forwards = backwards = 0
    for done, i in enumerate(reversed(range(len(steps))), start=1):
        step, y = steps[i], trajectory[0]
        previous = noises[i - 1] if i > 0 else None
        problem = StepProblem(eps_fn, step, y, noises[i], z0, previous, noise_correction)
        solution = chosen.solve(problem, config)
        forwards, backwards = forwards + solution.forwards, backwards + solution.backwards
        if chosen.guarded:
            guarded[i] = safeguard(problem, solution)
            solution, forwards = guarded[i].solution, forwards + guarded[i].forwards
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
            callback(done, len(steps), [r.max().item() for r in solution.residuals])
    history, fallbacks = read_back(method, steps, trajectory, noises, residuals, guarded)
    return ChainInversion(trajectory, noises, history, forwards, backwards, fallbacks)


def read_back(
    method: str,
    steps: list[Step],
    trajectory: list[torch.Tensor],
    noises: list,
    residuals: list[list[torch.Tensor]],
    guarded: list[Guarded | None],
) -> tuple[list[list[list[float]]], list[list[str]]]:
    """The residual histories as floats per item, per step, per iterate, after checking that every latent and noise
    is finite (one device read), and the guard's words per item (``fallback_notes``, one more).

    Raises ``InversionError`` naming the first step (and, in a batch, the item) whose latent or noise is not finite.
    """
    finite = []
    for z, noise in zip(trajectory[:-1], noises):
        ok = torch.isfinite(z).flatten(1).all(1)
        finite.append(ok if noise is None else ok & torch.isfinite(noise).flatten(1).all(1))
    values = [torch.stack(finite).float()] + [torch.stack(r).float() for r in residuals if r]  # (steps or iterates, B)
    table = torch.cat([v.to(values[0].device) for v in values]).T.tolist()  # per item: [finite per step, residuals]
    for item, row in enumerate(table):
        for step, ok in zip(steps, row[: len(steps)]):
            if not ok:
                which = f" (item {item} of the batch)" if len(table) > 1 else ""
                raise InversionError(f"{method} produced a non-finite latent at timestep {step.t}{which}")
    history = []
    for row in table:
        at, per_step = len(steps), []
        for r in residuals:
            per_step.append(row[at : at + len(r)])
            at += len(r)
        history.append(per_step)
    return history, fallback_notes(method, steps, guarded, len(table))


def fallback_notes(method: str, steps: list[Step], guarded: list[Guarded | None], items: int) -> list[list[str]]:
    """Per item, one line per step where the guard took DDIM's guess: which timestep, why, and the two residuals
    where they were measured (one device read for all steps)."""
    checked = [(step, g) for step, g in zip(steps, guarded) if g is not None]
    if not checked:
        return [[] for _ in range(items)]

    def row(g: Guarded) -> torch.Tensor:
        """(3, B): the verdict, the solver's residual and DDIM's guess's (NaN where not measured)."""
        unknown = torch.full(g.verdict.shape, float("nan"), device=g.verdict.device)
        residuals = [unknown if r is None else r.float() for r in (g.solver_residual, g.guess_residual)]
        return torch.stack([g.verdict.float(), *residuals])

    table = torch.stack([row(g) for _, g in checked]).tolist()  # (steps, 3, B)
    notes: list[list[str]] = [[] for _ in range(items)]
    for (step, _), (verdicts, mine, ddim) in zip(checked, table):
        for item, (verdict, r, r_ddim) in enumerate(zip(verdicts, mine, ddim)):
            if verdict == KEPT:
                continue
            numbers = f" ({r:.3g} against {r_ddim:.3g})" if r == r and r_ddim == r_ddim else ""
            notes[item].append(f"timestep {step.t}: {method} {REASONS[int(verdict)]}{numbers}; DDIM's guess taken")
    return notes
