"""Running one cell of the bench: invert ``samples`` clean latents of one model with one method on one chain.

The same protocol as ``rnri_lab.testbeds.run_testbed`` (same seeds, same error measures; a test holds the two to the
same numbers), generalised to any test model, to the diffusers peer, and to wall time and peak memory.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch

from rnri.core.chain import Step, sample
from rnri.core.counting import count_unet_calls
from rnri.core.inversion import InversionError, invert_chain
from rnri.core.solvers import make_config
from rnri_lab.bench import peer
from rnri_lab.bench.grid import PEER, MethodSpec
from rnri_lab.bench.measure import Usage, measure
from rnri_lab.bench.models import TestModel, chain_steps

Noises = list[torch.Tensor | None]
Inverter = Callable[[TestModel, list[Step], torch.Tensor, Noises], tuple[torch.Tensor, Noises]]


@dataclass(frozen=True)
class CellResult:
    """Means over the samples of one (model, chain, case, method) cell; NaN where nothing finite was measured."""

    model: str
    chain: str
    case: str
    label: str
    family: str
    method: str
    options: str
    budget: int | None  # iterations per step, where the method has them
    samples: int
    failures: int  # inversions that raised InversionError (non-finite latents)
    reconstruction: float  # ||regenerate(invert(z0)) - z0|| / ||z0||
    zT_mean: float  # mean of the inverted z_T (0 is in distribution)
    zT_std: float  # standard deviation of z_T (1 is in distribution)
    zT_nll: float  # NLL per element of z_T under N(0, I), constant dropped (0.5 is typical)
    recovery: float  # ||z_T - true z_T|| / ||true z_T||; generated case only, else NaN
    forwards: float  # UNet forward passes per inversion, counted by hooks
    backwards: float  # UNet backward passes per inversion, counted by hooks
    forward_equivalents: float  # forwards + backward_cost * backwards
    wall_s: float  # seconds per inversion
    peak_mib: float  # largest peak memory added by one inversion (CPU: resident-set growth)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def rnri_inverter(spec: MethodSpec) -> Inverter:
    """An rnri method (``invert_chain``) with the spec's options and noise correction."""
    config = make_config(spec.method, spec.options)

    def run(model: TestModel, steps: list[Step], z0: torch.Tensor, noises: Noises) -> tuple[torch.Tensor, Noises]:
        result = invert_chain(model.eps_fn, steps, z0, noises, spec.method, config, spec.noise_correction)
        return result.trajectory[0], result.noises

    return run


def peer_inverter(
    model: TestModel, steps: list[Step], z0: torch.Tensor, noises: Noises
) -> tuple[torch.Tensor, Noises]:
    """diffusers' DDIM inversion; it runs its own (uniform DDIM) chain, which ``steps`` must be."""
    assert all(s.c_skip == 0.0 for s in steps), "the diffusers peer runs only on the ddim-uniform chain"
    return peer.invert(model.eps_fn, model.scheduler_config, z0, len(steps)), noises


def _draw(model: TestModel, steps: list[Step], chain: str, case: str, seed: int):
    """(true z_T, noises, clean latent z0) of one sample, drawn exactly as ``run_testbed`` draws them."""
    g = torch.Generator().manual_seed(seed)
    z_T = torch.randn(1, *model.shape, generator=g)
    noises = [torch.randn(z_T.shape, generator=g) if chain == "lcm" and not st.is_last else None for st in steps]
    with torch.no_grad():
        z0 = sample(model.eps_fn, steps, z_T, noises)[-1] if case == "generated" else model.draw_data(g)
    return z_T, noises, z0


def _one_sample(model, steps, chain, case, seed, inverter: Inverter) -> tuple[tuple[float, ...], Usage, Any]:
    """Invert one clean latent; its error measures, usage and UNet calls (or None measures when it failed)."""
    z_T, noises, z0 = _draw(model, steps, chain, case, seed)
    with count_unet_calls(model.unet) as calls, measure() as usage:
        try:
            found, found_noises = inverter(model, steps, z0, noises)
        except InversionError:
            return None, usage, calls
    with torch.no_grad():
        regenerated = sample(model.eps_fn, steps, found, found_noises)[-1]
    measures = (
        ((regenerated - z0).norm() / z0.norm()).item(),
        found.mean().item(),
        found.std().item(),
        0.5 * found.pow(2).mean().item(),
        ((found - z_T).norm() / z_T.norm()).item() if case == "generated" else math.nan,
    )
    return measures, usage, calls


def _mean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return statistics.fmean(finite) if finite else math.nan


def run_cell(
    model: TestModel,
    chain: str,
    case: str,
    spec: MethodSpec,
    samples: int,
    steps_n: int = 4,
    backward_cost: float = 2.0,
) -> CellResult:
    """Invert ``samples`` clean latents (seeds 1000, 1001, ...) of ``model`` with ``spec`` on ``chain``."""
    steps = chain_steps(chain, model.scheduler_config, steps_n)
    inverter = peer_inverter if spec.method == PEER else rnri_inverter(spec)
    rows, usages, counts = [], [], []
    for s in range(samples):
        measures, usage, calls = _one_sample(model, steps, chain, case, 1000 + s, inverter)
        usages.append(usage)
        counts.append((calls.forwards, calls.backwards))
        if measures is not None:
            rows.append(measures)
    columns = [_mean(list(c)) for c in zip(*rows)] if rows else [math.nan] * 5
    forwards, backwards = (statistics.fmean(c) for c in zip(*counts))
    return CellResult(
        model.name,
        chain,
        case,
        spec.label,
        spec.family,
        spec.method,
        spec.options_text(),
        spec.budget,
        samples,
        samples - len(rows),
        *columns,
        forwards,
        backwards,
        forwards + backward_cost * backwards,
        statistics.fmean(u.wall_s for u in usages),
        max(u.peak_mib for u in usages),
    )
