"""The editor's form: which settings it offers and how raw values (from a page or any API client) are read back.

Every control is a field described once (``rnri.core.options``): the inversion's settings (``rnri.core.settings``), the
methods' own options (``rnri.core.solvers``), the mask's blending (``rnri.core.masks``) and the edit's own settings
below. Only the choice of what the editor shows is made here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rnri.core.masks import BlendConfig
from rnri.core.options import Setting, check, option, settings_of
from rnri.core.settings import InversionSettings, with_method
from rnri.editor.uploads import InputError
from rnri.pipelines.backbones import backbone_of, default_guidance

EDITOR_METHODS = ("ddim", "quasi-newton", "rnri", "gnri", "fixed-point")  # the default first (docs/solver-choice.md)
INVERSION_FIELDS = ("method", "num_inference_steps", "guidance_scale", "seed", "strength")  # of InversionSettings
SOLVER_FIELDS = ("iterations", "prior_weight")  # the methods' options the editor offers, where a method has them


@dataclass(frozen=True)
class EditOptions:
    """The edit's own settings: changing them re-edits from the cached inversion."""

    edit_guidance: float | None = option(  # None: the backbone's edit guidance
        None, "Edit guidance", "The edit's alone: changing it re-edits without inverting.", low=0, high=15, step=0.5
    )
    auto_mask: bool = option(False, "Automatic mask", "With nothing painted, let the prompts say where.")


@dataclass(frozen=True)
class LocalEdit:
    """Where an edit may act: the painted region, else (with ``auto``) one estimated from the prompts, else all."""

    auto: bool = False  # with nothing painted, estimate the region DiffEdit-style (rnri.auto_mask)
    blend: BlendConfig = BlendConfig()  # dilation, feather and paste-back of whichever region is used


@dataclass(frozen=True)
class Choices:
    """A form's settings, checked."""

    settings: InversionSettings  # guidance resolved; only the method's own options
    edit_guidance: float
    local: LocalEdit


def controls(pipe: Any) -> dict[str, Setting]:
    """The form's settings by name (the ``/edit`` endpoint's parameter names) in the order shown, with this
    pipeline's defaults."""
    # every solver field the editor offers, from the method that takes them all; the page hides those the chosen
    # method does not take (the default, ddim, takes none) and read_form reads only the chosen method's
    inversion, solver = settings_of(InversionSettings), solver_settings("rnri")
    method = inversion["method"]
    found = {name: inversion[name] for name in INVERSION_FIELDS} | solver
    found |= {
        "method": dataclasses.replace(method, option=dataclasses.replace(method.option, choices=EDITOR_METHODS)),
        "num_inference_steps": _with_default(inversion["num_inference_steps"], backbone_of(pipe).num_inference_steps),
        "guidance_scale": _with_default(inversion["guidance_scale"], default_guidance(pipe)),
        "edit_guidance": _with_default(settings_of(EditOptions)["edit_guidance"], default_guidance(pipe, edit=True)),
        "auto_mask": settings_of(EditOptions)["auto_mask"],
    }
    return found | settings_of(BlendConfig)


def not_applicable(pipe: Any) -> dict[str, str]:
    """The form's settings that do nothing on ``pipe``'s backbone, each with the reason: front ends show them fixed
    at their default, and a request that sets them otherwise is refused (never silently ignored)."""
    backbone = backbone_of(pipe)
    if backbone.takes_guidance:
        return {}
    reason = (
        f"Not used by the {backbone.name} backbone: it is timestep-distilled and takes no guidance "
        "(no guidance embedding, no classifier-free guidance)."
    )
    return {"guidance_scale": reason, "edit_guidance": reason}


def solver_settings(method: str) -> dict[str, Setting]:
    """The options ``method`` takes that the editor offers (an empty dict for ddim)."""
    from rnri.core.solvers import get_method

    config_type = get_method(method).config_type
    offered = settings_of(config_type) if config_type else {}
    return {name: setting for name, setting in offered.items() if name in SOLVER_FIELDS}


def read_form(values: Mapping[str, Any], pipe: Any) -> Choices:
    """The form's raw values (by control name; missing ones at their defaults) checked and typed."""
    offered = controls(pipe)

    def value(name: str, setting: Setting | None = None) -> Any:
        setting = setting or offered[name]
        try:
            return check(setting, values.get(name, setting.default))
        except ValueError as error:
            raise InputError(str(error)) from error

    for name, reason in not_applicable(pipe).items():
        if value(name) != offered[name].default:
            raise InputError(f"{offered[name].option.label}: {reason}")
    method = value("method")
    for name in SOLVER_FIELDS:  # each checked whatever the method (a page keeps a hidden one's last value);
        value(name)  # only the chosen method's are used
    options = {name: value(name, setting) for name, setting in solver_settings(method).items()}
    settings = with_method(InversionSettings(**{name: value(name) for name in INVERSION_FIELDS}), method, options)
    local = LocalEdit(value("auto_mask"), BlendConfig(value("dilation"), value("feather"), value("paste_back")))
    return Choices(settings, value("edit_guidance"), local)


def _with_default(setting: Setting, default: Any) -> Setting:
    return dataclasses.replace(setting, default=default, optional=False)
