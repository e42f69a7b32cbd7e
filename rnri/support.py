"""What an edit may ask of a pipeline beyond its prompts, and in words why not: the one place the public API refuses
a negative prompt, attention control or directions from, and a front end disables their controls from.

- A **negative prompt** replaces the empty prompt in classifier-free guidance's unconditional branch, so it exists
  only where the edit runs CFG: a UNet without a guidance embedding at a guidance scale over 1 (Stable Diffusion and
  SDXL at their edit guidance 7.5, LCM-LoRA above 1). An LCM and FLUX.1-dev embed their guidance and FLUX.1-schnell
  takes none (no unconditional branch); Turbo edits at guidance 0 and LCM-LoRA at 1, where the stock pipelines run
  no CFG either.
- **Attention control and directions** (concepts) run on the LCM chain with a guidance embedding for now
  (``rnri.pipelines.control``): every branch shares one guidance embedding, which a CFG batch has no place for.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rnri.pipelines import adapter, flux
from rnri.pipelines.backbones import backbone_of


@dataclass(frozen=True)
class Support:
    """Whether a feature applies to a pipeline; ``reason`` says why not, in one sentence a person can act on."""

    applies: bool
    reason: str = ""  # empty when it applies


def negative_prompt_support(pipe: Any, guidance_scale: float | None = None) -> Support:
    """Whether an edit at ``guidance_scale`` (None: the backbone's edit guidance) has an unconditional branch for a
    negative prompt to replace."""
    backbone = backbone_of(pipe)
    if adapter.embeds_guidance(pipe) or flux.is_flux(pipe):
        how = "takes its guidance as an embedding" if backbone.takes_guidance else "takes no guidance"
        return Support(
            False,
            f"A negative prompt needs classifier-free guidance; this {backbone.name} model {how}, so no "
            "unconditional branch runs.",
        )
    guidance = backbone.guidance_scale if guidance_scale is None else guidance_scale
    if guidance <= 1.0:
        return Support(
            False,
            f"A negative prompt needs classifier-free guidance, which runs at a guidance scale over 1; this "
            f"{backbone.name} model edits at {guidance:g}, without an unconditional branch.",
        )
    return Support(True)


def steering_support(pipe: Any) -> Support:
    """Whether attention control and directions (concepts) run on ``pipe``: LCM pipelines with a guidance
    embedding."""
    if adapter.embeds_guidance(pipe):
        return Support(True)
    return Support(
        False,
        "Attention control and concepts (directions) run on LCM pipelines with a guidance embedding for now; this is "
        f"{backbone_of(pipe).name} ({type(pipe).__name__} with {type(pipe.scheduler).__name__}).",
    )
