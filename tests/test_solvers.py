"""Inverse-step solvers on analytic denoisers with known answers."""

from __future__ import annotations

import math

import pytest
import torch

from rnri.core.chain import step_map
from rnri.core.solvers import METHODS, NewtonConfig, StepProblem, get_method, make_config
from rnri.core.solvers.newton import newton_update
from rnri.core.solvers.problem import InversionError
from rnri_lab.analytic import FAMILIES, GaussianMixtureUNet, MixtureConfig
from rnri_lab.testbeds import run_testbed


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
    """rnri with noise correction on the stochastic LCM chain: for clean latents drawn from the data (no exact root,
    as with a photo) the reconstruction error is under half DDIM inversion's. (Its z_T no longer stays as close to
    N(0, I) as DDIM's on every testbed: the guard puts each step's residual before the prior's pull.)"""
    rnri = run_testbed(family, "data", "lcm", "rnri", samples=4, noise_correction=True)
    ddim = run_testbed(family, "data", "lcm", "ddim", samples=4)
    assert rnri.reconstruction < 0.5 * ddim.reconstruction


@pytest.mark.parametrize("family", FAMILIES)
def test_default_rnri_keeps_z_T_in_distribution(family):
    """On latents the chain generated, rnri's z_T stays near the prior's spread, where fixed-point drifts out."""
    rnri = run_testbed(family, "generated", "lcm", "rnri", samples=6, noise_correction=True)
    fixed = run_testbed(family, "generated", "lcm", "fixed-point", {"iterations": 3}, samples=6)
    assert 0.75 < rnri.zT_std < 1.4
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
    """Counted by hooks on the UNet: 19 forwards and no backward for 4 steps with noise correction: 13 for the
    solver (the DDIM guess of z_T's step is one; the others start from the chain's own guess, free), and 6 for the
    guard (DDIM's guess and its residual on the three steps that did not start from it)."""
    result = run_testbed("diagonal", "generated", "lcm", "rnri", samples=2, noise_correction=True)
    assert (result.forwards, result.backwards) == (19, 0)
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

    from rnri.core.inversion import invert_chain

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


def test_gnri_is_the_papers_equation_10(steps):
    """One iteration from z_{t-1} = y: F = ||z - f(z)||_1 + lambda / beta_t ||z - mu_t||_2 (Eq. 9), its gradient by
    autograd, and the element-wise step z - (F / D) / (g + eta) (Eq. 10), computed here by hand."""
    from rnri.core.chain import solve_frozen
    from rnri.core.priors import forward_prior
    from rnri.core.solvers import GuidedNewtonConfig

    problem, _ = exact_problem("diagonal", steps[1])
    config = GuidedNewtonConfig(iterations=1, guidance_weight=0.3, eta=1e-3)
    z = problem.y.clone().requires_grad_(True)
    mu, beta = forward_prior(problem.y, problem.step)
    f_z = solve_frozen(problem.y, problem.eps_fn(z, problem.step.t), problem.step, None)
    F = (z - f_z).abs().sum() + 0.3 / beta * (z - mu).norm()
    (g,) = torch.autograd.grad(F, z)
    expected = z.detach() - (F.detach() / z.numel()) / (g + 1e-3)
    solution = get_method("gnri").solve(problem, config)
    assert torch.allclose(solution.z, expected, rtol=1e-5, atol=1e-6)
    assert (solution.forwards, solution.backwards) == (1, 1)
    assert torch.allclose(solution.guess, f_z.detach())  # f(z_{t-1}) is DDIM inversion's answer


def test_gnri_defaults_are_the_papers_setting():
    from rnri.core.solvers import GuidedNewtonConfig

    config = GuidedNewtonConfig()
    assert (config.iterations, config.guidance_weight) == (2, 0.1)


@pytest.mark.parametrize("family", ["isotropic", "diagonal", "subspace"])
@pytest.mark.parametrize("index", [0, 1])
def test_quasi_newton_recovers_exact_roots_faster_than_fixed_point(family, index, steps):
    """Secant updates on the noisiest steps' exact roots: at the same 8 forwards, a residual at least 8 times smaller
    than the fixed-point iteration's (the same start and step without the secant correction). On the narrow mixture
    and on some low-noise steps it is not always ahead: docs/solver-choice.md."""
    problem, _ = exact_problem(family, steps[index])
    quasi = get_method("quasi-newton").solve(problem, make_config("quasi-newton", {"iterations": 6, "pays": 0.0}))
    fixed = get_method("fixed-point").solve(problem, make_config("fixed-point", {"iterations": 7}))
    with torch.no_grad():
        r_fixed = problem.relative_residual(problem.forward(fixed.z)[0])
    assert quasi.forwards == 8 == fixed.forwards
    assert quasi.residual < r_fixed / 8
    assert quasi.residual < quasi.guess_residual / 4  # and far below DDIM's guess, which it starts from


def test_quasi_newton_stops_when_an_iteration_stops_paying(steps):
    """On a step whose DDIM guess is exact (eps constant in z) the first iteration gains nothing: it stops there."""

    def eps_fn(z, t):
        return torch.ones_like(z)

    y = torch.randn(1, 4, 8, 8)
    problem = StepProblem(eps_fn, steps[-1], y, None, y)
    solution = get_method("quasi-newton").solve(problem, make_config("quasi-newton", {"iterations": 5}))
    assert solution.forwards == 3  # the guess, its residual, one iteration that did not pay
    assert solution.residual < 1e-6


def test_quasi_newton_solves_only_the_last_step_under_noise_correction():
    """Correction makes every other step exact at any z: they take DDIM's guess, so the whole inversion costs DDIM +
    correction (4 + 3 forwards) plus the last step's iterations and the guess's residual."""
    ddim = run_testbed("isotropic", "data", "lcm", "ddim", samples=2, noise_correction=True)
    quasi = run_testbed("isotropic", "data", "lcm", "quasi-newton", {"pays": 0.0}, samples=2, noise_correction=True)
    assert (ddim.forwards, quasi.forwards) == (7, 7 + 1 + 2)
    assert quasi.reconstruction < ddim.reconstruction


class Wild:
    """A solver that answers with NaN in the first item and with a latent far out (1e6) in the others."""

    @staticmethod
    def solve(problem, config):
        from rnri.core.solvers import StepSolution

        z = torch.full_like(problem.y, 1e6)
        z[0] = float("nan")
        return StepSolution(z=z, eps=None)


def test_the_guard_takes_ddims_guess_for_a_non_finite_or_worse_answer_and_says_so(steps, monkeypatch):
    from rnri.core import solvers
    from rnri.core.chain import sample
    from rnri.core.inversion import invert_chain

    model = GaussianMixtureUNet(MixtureConfig(family="isotropic"))

    def eps_fn(z, t):
        return model(z, t, return_dict=False)[0]

    monkeypatch.setitem(solvers.METHODS, "wild", solvers.Method(Wild.solve, None))
    z0 = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    for correction in (False, True):
        noises = [torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(i)) for i in range(3)] + [None]
        wild = invert_chain(eps_fn, steps, z0, noises, "wild", None, correction)
        ddim = invert_chain(eps_fn, steps, z0, noises, "ddim", None, correction)
        for a, b in zip(wild.trajectory, ddim.trajectory):
            assert torch.allclose(a, b)  # every step of both items fell back to DDIM's guess
        assert [len(notes) for notes in wild.fallbacks] == [4, 4]
        assert "non-finite" in wild.fallbacks[0][0] and "larger residual than DDIM's guess" in wild.fallbacks[1][0]
        assert ddim.fallbacks == [[], []]
        with torch.no_grad():
            assert torch.isfinite(sample(eps_fn, steps, wild.trajectory[0], wild.noises)[-1]).all()


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_is_never_worse_than_ddim_step_by_step(method, steps):
    """On data latents of a narrow mixture (ill-conditioned, several basins), each step's residual is at most DDIM
    inversion's guess's for that step: the guard sees to it whatever the solver does."""
    from rnri.core.inversion import invert_chain

    model = GaussianMixtureUNet(MixtureConfig(family="narrow", components=32, seed=2))

    def eps_fn(z, t):
        return model(z, t, return_dict=False)[0]

    g = torch.Generator().manual_seed(3)
    z0 = model.sample_data(2, g)
    noises = [torch.randn(2, 4, 8, 8, generator=g) for _ in range(3)] + [None]
    result = invert_chain(eps_fn, steps, z0, noises, method, make_config(method, {}))
    with torch.no_grad():
        for i, step in enumerate(steps):
            y, z = result.trajectory[i + 1], result.trajectory[i]
            problem = StepProblem(eps_fn, step, y, noises[i], z0)
            ours = problem.relative_residual(problem.forward(z)[0])
            theirs = problem.relative_residual(problem.forward(get_method("ddim").solve(problem).z)[0])
            assert (ours <= theirs * (1 + 1e-5)).all()


def test_presets_are_the_published_settings():
    import rnri

    paper, official = rnri.preset("paper"), rnri.preset("official-code")
    assert (paper.method, paper.solver.iterations, paper.noise_correction, paper.strength) == ("gnri", 2, False, 1.0)
    assert (official.method, official.solver.iterations, official.solver.prior_weight) == ("rnri-jf", 2, 0.1)
    assert (official.noise_correction, official.strength) == (False, 0.5)
    assert official.invert_kwargs()["method"] == "rnri-jf"
    with pytest.raises(ValueError, match="unknown preset"):
        rnri.preset("fast")
