"""How a photo is inverted, as one typed value: the keyword arguments of ``rnri.invert`` besides the photo and the
source prompt, each field described once for every front end (:mod:`rnri.core.options`)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from rnri.core.options import option, read


@dataclass(frozen=True)
class InversionSettings:
    """Everything besides the photo and the source prompt that changes an inversion; None: the backbone's default
    (``rnri.pipelines.backbones``)."""

    method: str = option("ddim", "Inversion method", "How each step of the chain is inverted.")  # rnri.METHODS
    num_inference_steps: int | None = option(  # None: the backbone's (LCM 4, Stable Diffusion 50)
        None, "Steps", "Sampling steps of the chain.", low=1, high=50, step=1, flag="--steps"
    )
    guidance_scale: float | None = option(  # None: the backbone's inversion guidance
        None,
        "Guidance scale",
        "How much the source prompt steers the inverted chain (the edit's guidance is a setting of its own).",
        low=0,
        high=15,
        step=0.5,
        flag="--guidance",
    )
    seed: int = option(0, "Seed", "Seed of the fixed per-step noises.", low=0, high=2**31 - 1, step=1)
    strength: float = option(
        1.0, "Edit strength", "Fraction of the chain inverted: less keeps more structure.", low=0.05, high=1, step=0.05
    )
    chain: str | None = option(  # None: the scheduler's own; which it runs is the adapter's (SCHEDULER_CHAINS)
        None, "Chain", "Sampler chain, one the model's scheduler runs (e.g. ddim on LCM: deterministic)."
    )
    noise_correction: bool | None = option(  # None: on where the chain injects noise (rnri.invert's default)
        None, "Noise correction", "Store the noises that make every step but the last exact (ReNoise)."
    )
    resolution: int | None = option(  # None: the backbone's (Turbo 512), else the model's native size
        None, "Resolution", "Long side the photo is fitted to.", low=64, high=2048, step=8
    )
    solver: Any = (
        None  # the method's options (a frozen config of rnri.core.solvers; ``with_method`` builds it), None for
    )
    # a method without any (or, given to rnri.invert, the method's defaults)

    def __post_init__(self) -> None:
        """The checks ``rnri.invert`` makes of these values, made where they are set (a field left None is the
        backbone's, checked there); the method's options are checked by its config."""
        steps, guidance = self.num_inference_steps, self.guidance_scale
        if steps is not None and not (isinstance(steps, int) and 1 <= steps <= 50):
            raise ValueError(f"num_inference_steps must be an integer from 1 to 50, got {steps!r}")
        if not 0.0 < self.strength <= 1.0:
            raise ValueError(f"strength must be in (0, 1], got {self.strength}")
        if guidance is not None and not math.isfinite(guidance):
            raise ValueError(f"guidance_scale must be a finite number, got {guidance}")

    def invert_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``rnri.invert`` (``rnri.invert(pipe, prompt, image=photo, settings=settings)`` takes
        the value whole)."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "solver"}
        solver = {} if self.solver is None else dataclasses.asdict(self.solver)
        return fields | solver


def with_options(settings: InversionSettings) -> InversionSettings:
    """``settings`` with its method's options built (the defaults where ``solver`` is None); ``ValueError`` for an
    unknown method or options of another method's type."""
    from rnri.core.solvers import get_method, make_config

    config_type = get_method(settings.method).config_type
    if settings.solver is None:
        defaults = None if config_type is None else make_config(settings.method, {})
        return settings if defaults is None else dataclasses.replace(settings, solver=defaults)
    if type(settings.solver) is not config_type:
        wanted = "no options" if config_type is None else f"a {config_type.__name__}"
        raise ValueError(f"method {settings.method!r} takes {wanted}, got a {type(settings.solver).__name__}")
    return settings


def with_method(settings: InversionSettings, method: str, options: dict[str, Any] | None = None) -> InversionSettings:
    """``settings`` with ``method`` and its options (the rest at the method's defaults); ``ValueError`` for an
    unknown method or option."""
    from rnri.core.solvers import make_config  # torch: only once a method is chosen

    return dataclasses.replace(settings, method=method, solver=make_config(method, options or {}))


def read_method(text: str) -> tuple[str, dict[str, Any]]:
    """``"rnri"`` or ``"rnri:iterations=2,norm=l1"`` -> the method and its checked options."""
    from rnri.core.solvers import get_method

    name, _, rest = text.partition(":")
    return name, read(get_method(name).config_type, [rest], f"method {name!r}")


# Published settings, reproduced (docs/solver-choice.md): the paper's (Eq. 9-10 as written, two iterations, the
# chain's noise fixed by the seed) and its official code's (SDXL-Turbo: its update, two iterations, prior weight 0.1,
# the noise fixed by the seed and shared with the edit, the last half of the chain inverted; its edits run at
# guidance 1.2, a regenerate setting). Name -> (method, the method's options, the other settings).
PRESETS: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    "paper": ("gnri", {"iterations": 2}, {"noise_correction": False}),
    "official-code": ("rnri-jf", {"iterations": 2, "prior_weight": 0.1}, {"noise_correction": False, "strength": 0.5}),
}


def preset(name: str) -> InversionSettings:
    """The settings of a published setting in ``PRESETS``: ``rnri.invert(pipe, prompt, image=photo,
    settings=preset("paper"))``; ``ValueError`` naming the known ones otherwise."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    method, options, rest = PRESETS[name]
    return with_method(InversionSettings(**rest), method, options)
