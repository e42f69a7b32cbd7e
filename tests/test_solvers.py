"""Inverse-step solvers on analytic denoisers with known answers."""

from __future__ import annotations

import math

import pytest
import torch

from rnri.analytic import FAMILIES, GaussianMixtureUNet, MixtureConfig
from rnri.chain import step_map
from rnri.solvers import METHODS, NewtonConfig, StepProblem, get_method, make_config
from rnri.solvers.newton import newton_update
from rnri.solvers.problem import InversionError
from rnri.testbeds import run_testbed


def exact_problem(family: str, step, seed: int = 0) -> tuple[StepProblem, torch.Tensor]:
    """A deterministic-chain step whose exact root ``z_true`` is known."""
    model = GaussianMixtureUNet(MixtureConfig(family=family))

    def eps_fn(z, t):
        return model(z, t, return_dict=False)[0]

    z_true = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        y = step_map(z_true, eps_fn(z_true, step.t), step, None)
    return StepProblem(eps_fn, step, y, None, y), z_true


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("index", [0, 1])
def test_rnri_recovers_exact_roots(family, index, steps):
    problem, z_true = exact_problem(family, steps[index])
    solution = get_method("rnri").solve(problem, NewtonConfig(iterations=16, prior_weight=0.0))
    assert (solution.z - z_true).norm() / z_true.norm() < 1e-3
    assert solution.residuals[-1] < 1e-3 < solution.residuals[0]  # residuals fall


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("seed", [0, 1])
def test_rnri_beats_ddim_and_plain_fixed_point_at_t999(family, seed, steps):
    """At 14 forward-equivalents (6 forwards + 4 backwards at 3:1, against 14 fixed-point forwards) on the most
    ill-conditioned step. (Anderson-accelerated fixed point does better still here: docs/solver-choice.md.)"""
    problem, _ = exact_problem(family, steps[0], seed=seed)
    residual = {}
    for name, options in [
        ("ddim", {}),
        ("fixed-point", {"iterations": 13}),
        ("rnri", {"iterations": 4, "prior_weight": 0.0}),
    ]:
        z = get_method(name).solve(problem, make_config(name, options)).z
        with torch.no_grad():
            residual[name] = problem.relative_residual(problem.forward(z)[0])
    assert residual["rnri"] < residual["fixed-point"] < residual["ddim"]


@pytest.mark.parametrize("family", FAMILIES)
def test_default_rnri_reconstructs_real_data_far_better_than_ddim(family):
    """The defaults on the stochastic LCM chain (noise correction on, docs/solver-choice.md): for clean latents drawn
    from the data (no exact root, as with a photo) the reconstruction error is under half DDIM inversion's, and z_T
    stays no further from N(0, I) than DDIM's (std within 0.1 of it or closer to 1)."""
    rnri = run_testbed(family, "data", "lcm", "rnri", samples=4, noise_correction=True)
    ddim = run_testbed(family, "data", "lcm", "ddim", samples=4)
    assert rnri.reconstruction < 0.5 * ddim.reconstruction
    assert abs(rnri.zT_std - 1) < abs(ddim.zT_std - 1) + 0.1


@pytest.mark.parametrize("family", FAMILIES)
def test_default_rnri_keeps_z_T_in_distribution(family):
    """On latents the chain generated, the default's z_T has the prior's spread, where fixed-point drifts out."""
    rnri = run_testbed(family, "generated", "lcm", "rnri", samples=6, noise_correction=True)
    fixed = run_testbed(family, "generated", "lcm", "fixed-point", {"iterations": 3}, samples=6)
    assert 0.75 < rnri.zT_std < 1.25
    assert fixed.zT_std > 2.0


@pytest.mark.parametrize("family", FAMILIES)
def test_without_noise_correction_rnri_reconstructs_generated_latents_better_than_ddim(family):
    """Stock replay needs noise correction off; then the chain's own guess keeps rnri at least as good as DDIM."""
    rnri = run_testbed(family, "generated", "lcm", "rnri", samples=6)
    ddim = run_testbed(family, "generated", "lcm", "ddim", samples=6)
    assert rnri.reconstruction < ddim.reconstruction


def test_final_iterations_solve_the_one_uncorrectable_step():
    """With noise correction the error left is the last step's residual: three iterations there cut it (isotropic
    generated: 0.016 with one, 0.003 with three) for four more forwards."""
    one = run_testbed("isotropic", "generated", "lcm", "rnri", samples=4, noise_correction=True)
    three = run_testbed("isotropic", "generated", "lcm", "rnri", {"final_iterations": 3}, 4, noise_correction=True)
    assert three.reconstruction < 0.3 * one.reconstruction
    assert three.forwards == one.forwards + 4


NARROW = [(16, 0), (32, 0), (32, 1), (32, 2)]  # (components, seed): mixtures of many narrow components


@pytest.mark.parametrize(("components", "seed"), NARROW)
def test_default_rnri_is_never_far_worse_than_ddim(components, seed):
    """Latents the stock chain generated (an exact root exists) on a mixture whose component widths span two orders
    of magnitude: a strong denoiser snaps many latents onto one mode, and a first guess from the prior's mean fell
    into the wrong basin (errors 5 to 13 times DDIM's; docs/solver-choice.md, "Robustness"). No sample's
    reconstruction may come out more than twice as bad as DDIM inversion's worst."""
    ddim = run_testbed("narrow", "generated", "lcm", "ddim", samples=8, components=components, mixture_seed=seed)
    for correction in (True, False):  # the default, and what stock replay needs
        rnri = run_testbed(
            "narrow",
            "generated",
            "lcm",
            "rnri",
            samples=8,
            noise_correction=correction,
            components=components,
            mixture_seed=seed,
        )
        assert rnri.worst_reconstruction < 2 * ddim.worst_reconstruction


def test_default_cost_within_twenty_forward_equivalents():
    """Counted by hooks on the UNet: 13 forwards and no backward for 4 steps with noise correction (the DDIM guess
    of z_T's step is one; the others start from the chain's own guess, free)."""
    result = run_testbed("diagonal", "generated", "lcm", "rnri", samples=2, noise_correction=True)
    assert (result.forwards, result.backwards) == (13, 0)
    assert result.forwards + 2 * result.backwards <= 20


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("chain", ["lcm", "ddim"])
def test_forward_difference_slope_matches_autograd_without_a_backward(family, chain):
    """The slope of F along the fixed-point direction by a forward difference (h = 0.1) instead of a backward:
    the same inversion to within 10% relative reconstruction error, one more forward, no backward."""
    by_grad = run_testbed(family, "generated", chain, "rnri", {"derivative": "autograd"}, samples=3)
    by_difference = run_testbed(family, "generated", chain, "rnri", {"derivative": "difference"}, samples=3)
    assert by_difference.reconstruction == pytest.approx(by_grad.reconstruction, rel=0.1)
    assert by_difference.zT_std == pytest.approx(by_grad.zT_std, rel=0.02)
    assert by_difference.backwards == 0 < by_grad.backwards
    assert by_difference.forwards == by_grad.forwards + by_grad.backwards


def test_forward_difference_options_are_checked():
    with pytest.raises(ValueError, match="difference_step"):
        NewtonConfig(derivative="difference", difference_step=0.0)
    with pytest.raises(ValueError, match="fixed-point"):
        NewtonConfig(derivative="difference", direction="gradient")
    with pytest.raises(ValueError, match="derivative"):
        NewtonConfig(derivative="jvp")


def test_noise_correction_makes_non_last_steps_exact():
    plain = run_testbed("isotropic", "data", "lcm", "rnri", samples=3)
    corrected = run_testbed("isotropic", "data", "lcm", "rnri", samples=3, noise_correction=True)
    assert corrected.reconstruction < 0.2 * plain.reconstruction


def test_newton_update_refuses_zero_gradient():
    z = torch.ones(4)
    assert torch.equal(newton_update(z, torch.tensor(1.0), torch.zeros(4)), z)
    assert torch.equal(newton_update(z, torch.tensor(1.0), torch.full((4,), float("nan"))), z)


def test_jacobian_free_never_divides_by_zero(steps):
    """Where T(z) = z in some entries the official code divides by a zero gradient; ours leaves them alone."""

    def eps_fn(z, t):
        return torch.zeros_like(z)

    y = torch.randn(1, 4, 8, 8)
    solution = get_method("rnri-jf").solve(StepProblem(eps_fn, steps[-1], y, None, y), make_config("rnri-jf", {}))
    assert torch.isfinite(solution.z).all()


@pytest.mark.parametrize("method", sorted(METHODS))
def test_nan_from_unet_is_an_error_not_a_result(method, steps):
    def eps_fn(z, t):
        return torch.full_like(z, float("nan"))

    from rnri.inversion import invert_chain

    with pytest.raises(InversionError):
        invert_chain(eps_fn, steps, torch.randn(1, 4, 8, 8), [None] * 4, method, make_config(method, {}))


def test_config_validation():
    with pytest.raises(ValueError, match="norm"):
        NewtonConfig(norm="l3")
    with pytest.raises(ValueError, match="iterations"):
        NewtonConfig(iterations=0)
    with pytest.raises(ValueError, match="takes no option"):
        make_config("ddim", {"iterations": 2})
    with pytest.raises(ValueError, match="unknown inversion method"):
        get_method("newton")
    assert math.isclose(NewtonConfig().prior_weight, 0.1)
