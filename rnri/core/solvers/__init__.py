"""Inverse-step solvers by name: each is ``solve(problem, config) -> StepSolution`` with its own config type."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

from rnri.core.solvers import ddim, fixed_point, gnri, jacobian_free, newton, quasi_newton
from rnri.core.solvers.fixed_point import FixedPointConfig
from rnri.core.solvers.gnri import GuidedNewtonConfig
from rnri.core.solvers.jacobian_free import JacobianFreeConfig
from rnri.core.solvers.newton import NewtonConfig
from rnri.core.solvers.problem import StepProblem, StepSolution
from rnri.core.solvers.quasi_newton import QuasiNewtonConfig


@dataclass(frozen=True)
class Method:
    """An inversion method: its step solver and the type of its options (None when it takes none)."""

    solve: Callable[[StepProblem, Any], StepSolution]
    config_type: type | None
    guarded: bool = True  # each step's answer is checked against DDIM's guess (rnri.core.solvers.guard); DDIM is not


METHODS: dict[str, Method] = {
    "ddim": Method(ddim.solve, None, guarded=False),
    "fixed-point": Method(fixed_point.solve, FixedPointConfig),
    "gnri": Method(gnri.solve, GuidedNewtonConfig),  # the paper's Eq. 9-10 as written
    "rnri": Method(newton.solve, NewtonConfig),
    "rnri-jf": Method(jacobian_free.solve, JacobianFreeConfig),  # the official code's update
    "quasi-newton": Method(quasi_newton.solve, QuasiNewtonConfig),  # secant iterations where the root matters
}


def get_method(name: str) -> Method:
    """The method called ``name``; ``ValueError`` naming the known ones otherwise."""
    if name not in METHODS:
        raise ValueError(f"unknown inversion method {name!r}; choose one of {sorted(METHODS)}")
    return METHODS[name]


def make_config(name: str, options: dict[str, Any]) -> Any:
    """Build method ``name``'s config from keyword options; unknown options are a ``ValueError``."""
    config_type = get_method(name).config_type
    allowed = [f.name for f in fields(config_type)] if config_type else []
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"method {name!r} takes no option(s) {unknown}; its options are {allowed}")
    return config_type(**options) if config_type else None


__all__ = [
    "METHODS",
    "FixedPointConfig",
    "GuidedNewtonConfig",
    "JacobianFreeConfig",
    "Method",
    "NewtonConfig",
    "QuasiNewtonConfig",
    "StepProblem",
    "StepSolution",
    "get_method",
    "make_config",
]
