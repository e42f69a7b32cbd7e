"""What the bench runs: its configuration and the grid of methods, options and budgets."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rnri_lab.analytic import FAMILIES
from rnri_lab.bench.models import CHAINS, TINY
from rnri_lab.testbeds import AUTOGRAD, CASES

PEER = "diffusers-ddim-inverse"  # diffusers' DDIMInverseScheduler, run by rnri_lab.bench.peer


@dataclass(frozen=True)
class BenchConfig:
    """One bench run: which models, chains and budgets, and how many samples per cell."""

    samples: int = 8  # clean latents per (model, chain, case, method) cell; seeds 1000, 1001, ...
    budgets: tuple[int, ...] = (1, 2, 4)  # iterations per step of the iterative methods
    models: tuple[str, ...] = (*FAMILIES, TINY)  # analytic families and the tiny LCM pipeline's UNet
    chains: tuple[str, ...] = CHAINS
    cases: tuple[str, ...] = CASES  # "generated": made by the chain (exact root exists); "data": drawn as a photo
    num_inference_steps: int = 4
    backward_cost: float = 2.0  # forward-equivalents of one backward pass on the cost axis (the usual GPU ratio)
    pipeline: str | None = None  # also bench this LCM pipeline (Hub id or folder) as model "lcm", when it loads
    real_size: bool = True  # also measure cost at real size (rnri_lab.bench.realsize; about 6 min on 2 idle CPU cores)
    out_dir: Path = Path("bench-out")  # JSON, Markdown and PNG go here (git-ignored)


QUICK = BenchConfig(samples=2, budgets=(1, 2), real_size=False)  # a few minutes on a 2-core CPU


@dataclass(frozen=True)
class MethodSpec:
    """One row of the bench: an inversion method with its options, on the chains where it applies."""

    label: str  # row label in the tables
    family: str  # the plot's curve it belongs to (one curve per method, its points the budgets)
    method: str  # an rnri method name (rnri.METHODS) or PEER
    options: dict[str, Any] = field(default_factory=dict)
    noise_correction: bool = False
    budget: int | None = None  # iterations per step, where the method has them
    chains: tuple[str, ...] = CHAINS  # chains the method runs on

    def options_text(self) -> str:
        """The options as ``key=value, ...`` (empty for none)."""
        return ", ".join(f"{k}={v}" for k, v in self.options.items())


def method_grid(budgets: tuple[int, ...]) -> list[MethodSpec]:
    """Every method at every budget, then rnri's variants at its default budget, then the diffusers peer."""
    specs = [MethodSpec("ddim", "ddim", "ddim")]
    for k in budgets:
        specs.append(MethodSpec(f"fixed-point x{k}", "fixed-point", "fixed-point", {"iterations": k}, budget=k))
    for k in (k for k in budgets if k >= 2):  # Anderson mixes two or more iterates
        options = {"iterations": k, "anderson": 2}
        specs.append(
            MethodSpec(f"fixed-point x{k} + Anderson", "fixed-point + Anderson", "fixed-point", options, budget=k)
        )
    for k in budgets:
        specs.append(MethodSpec(f"rnri-jf x{k} (official code)", "rnri-jf", "rnri-jf", {"iterations": k}, budget=k))
    for k in budgets:
        specs.append(MethodSpec(f"gnri x{k} (the paper's Eq. 9-10)", "gnri", "gnri", {"iterations": k}, budget=k))
    for k in budgets:
        label = "**rnri (old default)**" if k == 1 else f"rnri x{k}"
        specs.append(MethodSpec(label, "rnri", "rnri", {} if k == 1 else {"iterations": k}, budget=k))
    for k in budgets:
        options = {"iterations": k}
        specs.append(MethodSpec(f"quasi-newton x{k}", "quasi-newton", "quasi-newton", options, budget=k))
        specs.append(
            MethodSpec(
                f"quasi-newton x{k} + noise correction", "quasi-newton + noise correction", "quasi-newton", options,
                True, budget=k,
            )
        )  # fmt: skip
    specs += [
        MethodSpec("rnri, no prior (lambda=0)", "rnri, no prior", "rnri", {"prior_weight": 0.0}, budget=1),
        MethodSpec("rnri, autograd slope", "rnri, autograd slope", "rnri", dict(AUTOGRAD), budget=1),
        MethodSpec("rnri + noise correction", "rnri + noise correction", "rnri", {}, True, budget=1),
        MethodSpec("diffusers DDIMInverseScheduler", "diffusers DDIMInverseScheduler", PEER, chains=("ddim-uniform",)),
    ]
    return specs


def with_overrides(config: BenchConfig, **overrides: Any) -> BenchConfig:
    """``config`` with the given fields replaced (None values ignored)."""
    return replace(config, **{k: v for k, v in overrides.items() if v is not None})
