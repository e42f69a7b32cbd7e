"""The pipeline families rnri runs on and the defaults that belong to each: the one place a new family is added.

Today there is one, the Latent Consistency Model; Stable Diffusion with DDIM and the Turbo models (Euler ancestral)
come next, each with its own default guidance. A front end asks :func:`default_guidance` of the pipeline it holds
(or names the family for its help text) instead of writing a number down.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

DEFAULT_MODEL = "SimianLuo/LCM_Dreamshaper_v7"  # what the front ends load when no model is named (an LCM)


@dataclass(frozen=True)
class Backbone:
    """A family of diffusers pipelines and its defaults."""

    name: str
    pipelines: tuple[str, ...]  # class names of the diffusers pipelines of this family
    guidance_scale: float  # the family's default guidance scale (what its stock pipeline uses)


BACKBONES: dict[str, Backbone] = {
    "lcm": Backbone("lcm", ("LatentConsistencyModelPipeline",), guidance_scale=8.5),  # LCM's w, 8.5 in diffusers
}


def backbone_of(pipe: Any) -> Backbone:
    """The family of ``pipe`` (by its class or a base class); ``ValueError`` for a pipeline rnri does not know."""
    names = {cls.__name__ for cls in type(pipe).__mro__}
    for backbone in BACKBONES.values():
        if names.intersection(backbone.pipelines):
            return backbone
    known = ", ".join(p for b in BACKBONES.values() for p in b.pipelines)
    raise ValueError(f"rnri does not know the pipeline {type(pipe).__name__}; it runs on {known}")


def default_guidance(pipe: Any) -> float:
    """The default guidance scale of ``pipe``'s family."""
    return backbone_of(pipe).guidance_scale


def guidance_defaults() -> str:
    """The default guidance of every family, for a help text: ``"lcm 8.5"``."""
    return ", ".join(f"{b.name} {b.guidance_scale:g}" for b in BACKBONES.values())
