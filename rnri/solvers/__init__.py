"""Inverse-step solvers by name: each is ``solve(problem, config) -> StepSolution`` with its own config type."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

from rnri.solvers import ddim, fixed_point, jacobian_free, newton
from rnri.solvers.fixed_point import FixedPointConfig
from rnri.solvers.jacobian_free import JacobianFreeConfig
from rnri.solvers.newton import NewtonConfig
from rnri.solvers.problem import StepProblem, StepSolution


@dataclass(frozen=True)
class Method:
    """An inversion method: its step solver and the type of its options (None when it takes none)."""

    solve: Callable[[StepProblem, Any], StepSolution]
    config_type: type | None


METHODS: dict[str, Method] = {
    "ddim": Method(ddim.solve, None),
    "fixed-point": Method(fixed_point.solve, FixedPointConfig),
    "rnri": Method(newton.solve, NewtonConfig),
    "rnri-jf": Method(jacobian_free.solve, JacobianFreeConfig),
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
    "JacobianFreeConfig",
    "Method",
    "NewtonConfig",
    "StepProblem",
    "StepSolution",
    "get_method",
    "make_config",
]
