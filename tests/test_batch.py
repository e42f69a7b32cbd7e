"""Batches: every item of a batch is solved as if alone."""

from __future__ import annotations

import pytest
import torch

from rnri.analytic import GaussianMixtureUNet, MixtureConfig
from rnri.chain import step_map
from rnri.solvers import METHODS, StepProblem, get_method, make_config


@pytest.mark.parametrize("method", sorted(METHODS))
def test_no_item_of_a_batch_moves_another(method, steps):
    """Three exact problems of very different scale solved together give each its single answer: no norm, step
    length, line search or choice of the best iterate is shared between items."""
    model = GaussianMixtureUNet(MixtureConfig(family="diagonal"))

    def eps_fn(z, t):
        return model(z, t, return_dict=False)[0]

    scale = torch.tensor([1.0, 50.0, 0.02]).view(3, 1, 1, 1)
    z_true = scale * torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = step_map(z_true, eps_fn(z_true, steps[1].t), steps[1], None)
    options = {"rnri": {"iterations": 3}, "fixed-point": {"anderson": 2}}.get(method, {})
    solve, config = get_method(method).solve, make_config(method, options)
    together = solve(StepProblem(eps_fn, steps[1], y, None, y), config)
    for b in range(3):
        alone = solve(StepProblem(eps_fn, steps[1], y[b : b + 1], None, y[b : b + 1]), config)
        assert torch.allclose(together.z[b : b + 1], alone.z, rtol=1e-5, atol=1e-6 * scale[b].item())
        assert [r[b].item() for r in together.residuals] == pytest.approx([r.item() for r in alone.residuals], 1e-4)
