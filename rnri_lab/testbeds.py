"""Inversion on the analytic testbeds: accuracy, z_T statistics and cost, with evaluations counted by hooks."""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass
from typing import Any

import torch
from diffusers import LCMScheduler

from rnri.core.chain import sample
from rnri.core.counting import count_unet_calls
from rnri.core.inversion import invert_chain
from rnri.core.solvers import make_config
from rnri.pipelines.adapter import lcm_steps
from rnri_lab.analytic import GaussianMixtureUNet, MixtureConfig

CASES = ("generated", "data")  # clean latent made by the chain itself (an exact root exists) or drawn from the data


@dataclass(frozen=True)
class TestbedResult:
    """Means over the samples of one (testbed, method, options) cell."""

    family: str
    case: str
    chain: str
    method: str
    options: str
    reconstruction: float  # ||regenerate(invert(z0)) - z0|| / ||z0||
    zT_std: float  # standard deviation of the inverted z_T (1 is in distribution)
    zT_nll: float  # negative log-likelihood per element of z_T under N(0, I), constant dropped (0.5 is typical)
    recovery: float  # ||z_T - true z_T|| / ||true z_T|| (generated case only, else NaN)
    forwards: float  # UNet forward passes per inversion, counted by hooks
    backwards: float  # UNet backward passes per inversion, counted by hooks
    worst_reconstruction: float = math.nan  # the largest reconstruction error of a single sample

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_testbed(
    family: str,
    case: str,
    chain: str,
    method: str,
    options: dict[str, Any] | None = None,
    samples: int = 8,
    num_inference_steps: int = 4,
    noise_correction: bool = False,
    components: int = 0,
    mixture_seed: int = 0,
) -> TestbedResult:
    """Invert ``samples`` clean latents of one analytic testbed with one method; seeds fixed, so deterministic.
    ``components`` and ``mixture_seed`` pick another mixture of the family (0, 0: the family's default one)."""
    options = options or {}
    unet = GaussianMixtureUNet(MixtureConfig(family=family, components=components, seed=mixture_seed))
    steps = lcm_steps(LCMScheduler(), num_inference_steps)
    config = make_config(method, options)

    def eps_fn(z: torch.Tensor, t: int) -> torch.Tensor:
        return unet(z, t, return_dict=False)[0]

    rows = []
    for s in range(samples):
        g = torch.Generator().manual_seed(1000 + s)
        z_T = torch.randn(1, *unet.shape, generator=g)
        noises = [torch.randn(z_T.shape, generator=g) if chain == "lcm" and not st.is_last else None for st in steps]
        with torch.no_grad():
            z0 = sample(eps_fn, steps, z_T, noises)[-1] if case == "generated" else unet.sample_data(1, g)
        with count_unet_calls(unet) as calls:
            result = invert_chain(eps_fn, steps, z0, noises, method, config, noise_correction)
        found = result.trajectory[0]
        with torch.no_grad():
            regenerated = sample(eps_fn, steps, found, result.noises)[-1]
        rows.append(
            (
                ((regenerated - z0).norm() / z0.norm()).item(),
                found.std().item(),
                0.5 * found.pow(2).mean().item(),
                ((found - z_T).norm() / z_T.norm()).item() if case == "generated" else float("nan"),
                calls.forwards,
                calls.backwards,
            )
        )
    means = [statistics.fmean(column) for column in zip(*rows)]
    label = ", ".join(f"{k}={v}" for k, v in options.items())
    return TestbedResult(family, case, chain, method, label, *means, worst_reconstruction=max(r[0] for r in rows))


# The grid behind docs/solver-choice.md: (label, method, options, noise correction).
AUTOGRAD = {"derivative": "autograd"}  # the slope from a backward pass instead of a forward difference
SOLVER_GRID = [
    ("ddim", "ddim", {}, False),
    ("ddim + noise correction", "ddim", {}, True),
    ("fixed-point x3", "fixed-point", {"iterations": 3}, False),
    ("fixed-point x3 + Anderson", "fixed-point", {"iterations": 3, "anderson": 2}, False),
    ("rnri-jf x4 (official code)", "rnri-jf", {"iterations": 4}, False),
    ("gnri x2 (the paper's Eq. 9-10)", "gnri", {"iterations": 2}, False),
    ("rnri, no prior (lambda=0)", "rnri", {"prior_weight": 0.0}, False),
    ("rnri, autograd slope", "rnri", AUTOGRAD, False),
    ("rnri", "rnri", {}, False),
    ("rnri + noise correction", "rnri", {}, True),
    ("quasi-newton x2", "quasi-newton", {"iterations": 2}, False),
    ("quasi-newton x2 + noise correction", "quasi-newton", {"iterations": 2}, True),
]


def solver_table(chain: str = "lcm", samples: int = 8) -> str:
    """A Markdown table of every grid entry on every testbed: reconstruction error, z_T std, cost."""
    from rnri_lab.analytic import FAMILIES

    lines = [
        f"Chain: `{chain}`; {samples} samples per cell; cost = UNet forwards + backwards, counted by hooks.",
        "",
        "| method | cost (fwd+bwd) | " + " | ".join(f"{f} {c}" for f in FAMILIES for c in CASES) + " |",
        "|---|---|" + "---|" * (len(FAMILIES) * len(CASES)),
    ]
    for label, method, options, correction in SOLVER_GRID:
        cells, cost = [], ""
        for family in FAMILIES:
            for case in CASES:
                r = run_testbed(family, case, chain, method, options, samples, noise_correction=correction)
                cells.append(f"{r.reconstruction:.4f} / {r.zT_std:.2f}")
                cost = f"{r.forwards:.0f}+{r.backwards:.0f}"
        lines.append(f"| {label} | {cost} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(
        "Each cell: reconstruction error `||regenerate(invert(z0)) - z0|| / ||z0||` / std of z_T (1 is "
        "in distribution)."
    )
    return "\n".join(lines)


NARROW_MIXTURES = [(16, 0), (32, 0), (32, 1), (32, 2)]  # (components, seed) of the narrow family
ROBUSTNESS_GRID = [  # (label, method, options, noise correction)
    ("ddim", "ddim", {}, False),
    ("ddim + noise correction", "ddim", {}, True),
    ("rnri, init prior (the old default)", "rnri", {"init": "prior"}, False),
    ("rnri, init prior + noise correction", "rnri", {"init": "prior"}, True),
    ("rnri, init chain-ddim", "rnri", {"init": "chain-ddim"}, False),
    ("rnri x2, init chain-ddim", "rnri", {"init": "chain-ddim", "iterations": 2}, False),
    ("rnri, init chain-ddim + noise correction", "rnri", {"init": "chain-ddim"}, True),
    ("rnri, init chain-ddim + noise correction, last x3", "rnri", {"init": "chain-ddim", "final_iterations": 3}, True),
    ("quasi-newton x2 + noise correction", "quasi-newton", {"iterations": 2}, True),
    ("quasi-newton x4 + noise correction", "quasi-newton", {"iterations": 4}, True),
]


def robustness_table(samples: int = 8) -> str:
    """Narrow mixtures, latents the LCM chain generated (an exact root exists): mean and worst sample's error."""
    lines = [
        f"Chain: `lcm`, generated latents; {samples} samples per cell: mean / worst reconstruction error.",
        "",
        "| method | cost (fwd+bwd) | " + " | ".join(f"narrow {k}/{seed}" for k, seed in NARROW_MIXTURES) + " |",
        "|---|---|" + "---|" * len(NARROW_MIXTURES),
    ]
    for label, method, options, correction in ROBUSTNESS_GRID:
        cells, cost = [], ""
        for components, seed in NARROW_MIXTURES:
            r = run_testbed(
                "narrow",
                "generated",
                "lcm",
                method,
                options,
                samples,
                noise_correction=correction,
                components=components,
                mixture_seed=seed,
            )
            cells.append(f"{r.reconstruction:.4f} / {r.worst_reconstruction:.3f}")
            cost = f"{r.forwards:.0f}+{r.backwards:.0f}"
        lines.append(f"| {label} | {cost} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Print the solver-choice tables (docs/solver-choice.md).")
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--chain", choices=("lcm", "ddim"), action="append")
    parser.add_argument("--robustness", action="store_true", help="only the narrow mixtures' table")
    args = parser.parse_args()
    for chain in [] if args.robustness else args.chain or ["lcm", "ddim"]:
        print(solver_table(chain, args.samples), end="\n\n")
    print(robustness_table(args.samples))
