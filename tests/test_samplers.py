"""Each chain family's step map against its stock diffusers scheduler on random inputs, and its inverse, noise
correction and prior against the step map itself."""

from __future__ import annotations

import math

import pytest
import torch
from diffusers import DDIMScheduler, EulerAncestralDiscreteScheduler, EulerDiscreteScheduler, LCMScheduler

from rnri.core.chain import correct_noise, sample, solve_frozen, step_map
from rnri.core.priors import clean_prior, forward_prior
from rnri.core.samplers import euler, vp
from rnri.core.samplers.euler import EulerStep
from rnri.pipelines import adapter

SD = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"}
SHAPE = (1, 4, 8, 8)


def randn(*seeds: int) -> list[torch.Tensor]:
    return [torch.randn(SHAPE, generator=torch.Generator().manual_seed(s)) for s in seeds]


DDIM_SCHEDULERS = {
    "sd15-50": (DDIMScheduler(**SD, clip_sample=False, set_alpha_to_one=False, steps_offset=1), 50),
    "sd15-10": (DDIMScheduler(**SD, clip_sample=False, set_alpha_to_one=False, steps_offset=1), 10),
    "trailing-3": (DDIMScheduler(**SD, clip_sample=False, timestep_spacing="trailing", set_alpha_to_one=True), 3),
    "linspace-7": (DDIMScheduler(**SD, clip_sample=False, timestep_spacing="linspace"), 7),
}


@pytest.mark.parametrize("name", sorted(DDIM_SCHEDULERS))
def test_ddim_step_map_equals_diffusers_ddim_step(name):
    scheduler, n = DDIM_SCHEDULERS[name]
    steps = adapter.ddim_steps(scheduler, n)
    stock = DDIMScheduler.from_config(scheduler.config)
    stock.set_timesteps(n)
    assert [s.t for s in steps] == [int(t) for t in stock.timesteps]
    for i, step in enumerate(steps):
        z, eps = randn(i, 100 + i)
        expected = stock.step(eps, step.t, z, eta=0.0, return_dict=False)[0]
        assert torch.allclose(step_map(z, eps, step, None), expected, atol=1e-5, rtol=1e-5)


def test_ddim_v_prediction_is_turned_into_eps_exactly():
    """A v-prediction UNet's output, turned into eps by the adapter's rule, steps as the stock scheduler steps v."""
    scheduler = DDIMScheduler(**SD, clip_sample=False, set_alpha_to_one=False, prediction_type="v_prediction")
    stock = DDIMScheduler.from_config(scheduler.config)
    stock.set_timesteps(10)
    for i, step in enumerate(adapter.ddim_steps(scheduler, 10)):
        z, v = randn(i, 50 + i)
        expected = stock.step(v, step.t, z, return_dict=False)[0]
        assert torch.allclose(step_map(z, vp.eps_from_v(v, z, step.abar_t), step, None), expected, atol=1e-5)


def stock_euler(scheduler, n: int):
    stock = type(scheduler).from_config(scheduler.config)
    stock.set_timesteps(n)
    return stock


EULER_SCHEDULERS = {
    "sd-turbo-4": (EulerDiscreteScheduler(**SD, timestep_spacing="trailing"), 4),
    "sd-turbo-1": (EulerDiscreteScheduler(**SD, timestep_spacing="trailing"), 1),
    "sdxl-base-30": (EulerDiscreteScheduler(**SD, timestep_spacing="leading", steps_offset=1), 30),
}


@pytest.mark.parametrize("name", sorted(EULER_SCHEDULERS))
def test_euler_step_map_equals_diffusers_euler_step(name):
    """In sigma space: the stock ``x' = x + (sigma_next - sigma) eps``; rnri's chain runs on ``z = x / sqrt(1 +
    sigma^2)``, what the stock pipeline hands the UNet."""
    scheduler, n = EULER_SCHEDULERS[name]
    steps, stock = adapter.euler_steps(scheduler, n), stock_euler(scheduler, n)
    assert all(s.sigma_up == 0.0 for s in steps) and steps[-1].sigma_next == 0.0
    for i, step in enumerate(steps):
        x, eps = randn(i, 100 + i)
        t = stock.timesteps[i]
        assert torch.allclose(stock.scale_model_input(x, t), euler.from_sigma_space(x, step.sigma), atol=1e-6)
        expected = stock.step(eps, t, x, return_dict=False)[0]
        ours = euler.to_sigma_space(step_map(euler.from_sigma_space(x, step.sigma), eps, step, None), step.sigma_next)
        assert torch.allclose(ours, expected, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("n", [1, 2, 4])
def test_euler_ancestral_step_map_equals_diffusers_step(n):
    """SDXL-Turbo's scheduler with the noise it draws from the generator stored as n_i."""
    scheduler = EulerAncestralDiscreteScheduler(**SD, timestep_spacing="trailing")
    steps, stock = adapter.euler_ancestral_steps(scheduler, n), stock_euler(scheduler, n)
    assert steps[-1].sigma_up == 0.0 and all(s.sigma_up > 0 for s in steps[:-1])
    for i, step in enumerate(steps):
        x, eps = randn(i, 100 + i)
        expected = stock.step(eps, stock.timesteps[i], x, generator=torch.Generator().manual_seed(7)).prev_sample
        noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(7))
        z_next = step_map(euler.from_sigma_space(x, step.sigma), eps, step, noise)
        assert torch.allclose(euler.to_sigma_space(z_next, step.sigma_next), expected, atol=1e-4, rtol=1e-5)


def test_deterministic_euler_on_sigmas_is_ddim_in_z():
    """Euler with eps held fixed, ``x' = x0 + sigma_next eps``, is DDIM's step in the UNet's coordinates."""
    scheduler = EulerDiscreteScheduler(**SD, timestep_spacing="trailing")
    for i, step in enumerate(adapter.euler_steps(scheduler, 4)):
        z, eps = randn(i, 10 + i)
        abar_t, abar_next = 1 / (1 + step.sigma**2), 1 / (1 + step.sigma_next**2)
        ddim = math.sqrt(abar_next) * vp.predict_x0(z, eps, abar_t) + math.sqrt(1 - abar_next) * eps
        assert torch.allclose(step_map(z, eps, step, None), ddim, atol=1e-5)


def all_chains():
    """(label, steps, stochastic) of every family's chains, as the adapter builds them."""
    lcm = LCMScheduler(**SD, clip_sample=False, set_alpha_to_one=True)
    ddim_scheduler, _ = DDIM_SCHEDULERS["sd15-10"]
    ancestral = EulerAncestralDiscreteScheduler(**SD, timestep_spacing="trailing")
    plain = EulerDiscreteScheduler(**SD, timestep_spacing="trailing")
    return [
        ("lcm", adapter.lcm_steps(lcm, 4), True),
        ("lcm deterministic", adapter.lcm_steps(lcm, 4), False),
        ("ddim", adapter.ddim_steps(ddim_scheduler, 10), False),
        ("euler-ancestral", adapter.euler_ancestral_steps(ancestral, 4), True),
        ("euler on an ancestral schedule", adapter.euler_ancestral_steps(ancestral, 4), False),
        ("euler", adapter.euler_steps(plain, 4), False),
    ]


@pytest.mark.parametrize("label, steps, stochastic", all_chains(), ids=[c[0] for c in all_chains()])
def test_solve_frozen_inverts_every_step_map_exactly(label, steps, stochastic):
    for i, step in enumerate(steps):
        z, eps, noise = randn(i, 20 + i, 40 + i)
        noise = noise if stochastic and not step.is_last else None
        y = step_map(z, eps, step, noise)
        assert torch.allclose(solve_frozen(y, eps, step, noise), z, atol=1e-4), (label, step.t)


@pytest.mark.parametrize("label, steps, stochastic", all_chains(), ids=[c[0] for c in all_chains()])
def test_correct_noise_lands_the_step_exactly(label, steps, stochastic):
    """For any z, the corrected noise makes ``S_i(z) = y``, where the step can take a noise at all."""
    for i, step in enumerate(steps[:-1]):
        z, eps, y = randn(i, 60 + i, 80 + i)
        if isinstance(step, EulerStep) and step.sigma_up == 0.0:
            with pytest.raises(ValueError, match="injects noise"):
                correct_noise(y, z, eps, step)
            continue
        noise = correct_noise(y, z, eps, step)
        assert torch.allclose(step_map(z, eps, step, noise), y, atol=1e-4), (label, step.t)


@pytest.mark.parametrize("label, steps, stochastic", all_chains(), ids=[c[0] for c in all_chains()])
def test_every_prior_is_the_variance_preserving_forward_process(label, steps, stochastic):
    """Each family writes ``q(z_t | z_next)`` and ``q(z_t | z_0)`` in its own terms (Euler: in sigmas); all are
    DDPM's variance-preserving process."""
    (y,) = randn(3)
    for step in steps:
        abar_t, abar_next = step.abar_t, step.abar_next
        mean, var = forward_prior(y, step)
        assert torch.allclose(mean, math.sqrt(abar_t / abar_next) * y, atol=1e-6)
        assert var == pytest.approx(1 - abar_t / abar_next, rel=1e-6)
        mean0, var0 = clean_prior(y, step)
        assert torch.allclose(mean0, math.sqrt(abar_t) * y, atol=1e-6) and var0 == pytest.approx(1 - abar_t)


def test_euler_noise_levels_are_the_schedules_alphas():
    """``abar = 1 / (1 + sigma^2)``: an Euler step's sigmas are the scheduler's own alphas_cumprod at its timesteps."""
    scheduler = EulerAncestralDiscreteScheduler(**SD, timestep_spacing="trailing")
    for step in adapter.euler_ancestral_steps(scheduler, 4):
        assert step.abar_t == pytest.approx(float(scheduler.alphas_cumprod[step.t]), rel=1e-5)
    assert step.abar_next == 1.0


def test_sample_runs_any_family():
    for label, steps, stochastic in all_chains():
        (z_T,) = randn(0)
        noises = [torch.zeros_like(z_T) for _ in steps] if stochastic else None
        trajectory = sample(lambda z, t: 0.1 * z, steps, z_T, noises)
        assert len(trajectory) == len(steps) + 1 and torch.isfinite(trajectory[-1]).all(), label


def test_scheduler_checks_are_clear_errors():
    with pytest.raises(ValueError, match="integer timesteps"):
        adapter.euler_steps(EulerDiscreteScheduler(**SD), 3)  # linspace: 0, 499.5, 999
    with pytest.raises(ValueError, match="sigma 0"):
        adapter.euler_steps(EulerDiscreteScheduler(**SD, final_sigmas_type="sigma_min"), 4)
    with pytest.raises(ValueError, match="clipping"):
        adapter.ddim_steps(DDIMScheduler(**SD), 10)  # DDIMScheduler clips x0 by default
    with pytest.raises(ValueError, match="prediction_type"):
        adapter.ddim_steps(DDIMScheduler(**SD, clip_sample=False, prediction_type="sample"), 10)
