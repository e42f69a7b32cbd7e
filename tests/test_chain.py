"""The step maps against diffusers' own LCMScheduler, and the frozen-eps inverse."""

from __future__ import annotations

import pytest
import torch
from diffusers import LCMScheduler

from rnri.core.chain import sample, solve_frozen, step_map


def test_timesteps_are_lcm_four_step_schedule(steps):
    assert [s.t for s in steps] == [999, 759, 499, 259]
    assert [s.is_last for s in steps] == [False, False, False, True]
    assert steps[-1].abar_next == 1.0


def test_step_map_equals_diffusers_lcm_step(steps):
    scheduler = LCMScheduler()
    scheduler.set_timesteps(4)
    g = torch.Generator().manual_seed(3)
    z = torch.randn(1, 4, 8, 8, generator=g)
    eps = torch.randn(1, 4, 8, 8, generator=g)
    for step in steps:
        expected = scheduler.step(eps, step.t, z, generator=torch.Generator().manual_seed(7), return_dict=False)[0]
        noise = None if step.is_last else torch.randn(z.shape, generator=torch.Generator().manual_seed(7))
        assert torch.allclose(step_map(z, eps, step, noise), expected, atol=1e-5)


@pytest.mark.parametrize("deterministic", [True, False])
def test_solve_frozen_inverts_step_map_exactly(steps, deterministic):
    g = torch.Generator().manual_seed(0)
    for step in steps:
        z, eps, noise = (torch.randn(1, 4, 8, 8, generator=g) for _ in range(3))
        noise = None if deterministic else noise
        y = step_map(z, eps, step, noise)
        assert torch.allclose(solve_frozen(y, eps, step, noise), z, atol=1e-4)


def test_sample_returns_whole_trajectory(steps):
    def eps_fn(z, t):
        return 0.1 * z

    z_T = torch.randn(1, 4, 8, 8)
    trajectory = sample(eps_fn, steps, z_T, [torch.zeros_like(z_T)] * 3 + [None])
    assert len(trajectory) == 5 and trajectory[0] is z_T
