"""Several edits at once, and removal: LEdits++'s semantic guidance (Brack et al. 2024, Eq. 12) on an LCM chain.

Notation (docs/architecture.md, "Notation"): eps_w(z, c) is the LCM's noise prediction under prompt c with the
guidance embedding w fixed; c_0 the prompt ``regenerate`` was given (usually the source caption), c_k the direction
prompts, c_ref the reference prompt, s_k the signed weights, M_k the implicit masks. Each step takes

    eps = eps_w(z, c_0) + sum_k s_k M_k (eps_w(z, c_k) - eps_w(z, c_ref))

LEdits++ forms the same sum on Stable Diffusion around the unconditional prediction, with guidance scales s_k of 5
to 15 on unguided differences. An LCM has no unconditional branch: guidance is embedded in every prediction, so a
difference of two LCM predictions is already a guided difference (about w times the unguided one, as far as the
distillation is linear in the prompt) and weights are relative to a whole guided edit: s = 1 moves as far as
regenerating under c_k would (exactly that when c_ref = c_0 and M = 1), s = -1 as far the other way (removal). The
step map is affine in eps, so on the LCM chain the sum is the same sum of predicted clean latents.

Implicit masks (LEdits++ Sec. 3.3): M_k is 1 where both the direction's cross-attention map (its words, averaged
over heads and layers) and the magnitude of its noise difference (summed over channels) reach their ``threshold``
quantile, 0 elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rnri.core.options import option


@dataclass(frozen=True)
class Direction:
    """One edit among several: a prompt to move towards, or with a negative weight away from."""

    prompt: str  # a phrase ("a blue square") or a whole caption
    weight: float = 1.0  # s_k: 1 moves as far as regenerating under the prompt would; negative: away (removal)


@dataclass(frozen=True)
class Directions:
    """Several edits applied in one regeneration (LEdits++ on an LCM chain)."""

    terms: tuple[Direction, ...]  # the edits, at least one
    reference: str | None = ""  # c_ref: "" (LEdits++'s unconditional); None: the prompt given to regenerate
    threshold: float | None = option(  # quantile of the implicit masks (LEdits++'s lambda); None: act everywhere
        0.9, "Concept mask", "Quantile both a concept's attention and its effect must reach where it acts "
        "(LEdits++'s lambda); 0 acts everywhere.", low=0, high=0.99, step=0.01,
    )  # fmt: skip
    warmup: float = option(  # share of the first steps in which the directions do not act
        0.0, "Concept warm-up", "Share of the first steps in which the concepts do not act.", low=0, high=1, step=0.05
    )

    def __post_init__(self) -> None:
        if not self.terms:
            raise ValueError("give at least one direction")
        for term in self.terms:
            if not isinstance(term.prompt, str) or not term.prompt.strip():
                raise ValueError("every direction needs a non-empty prompt")
            if not torch.isfinite(torch.tensor(float(term.weight))):
                raise ValueError(f"direction weights must be finite, got {term.weight}")
        if self.threshold is not None and not 0.0 <= self.threshold < 1.0:
            raise ValueError(f"threshold must be in [0, 1) or None, got {self.threshold}")
        if not 0.0 <= self.warmup <= 1.0:
            raise ValueError(f"warmup must be in [0, 1], got {self.warmup}")


def quantile_mask(values: torch.Tensor, q: float) -> torch.Tensor:
    """1 where ``values`` (..., h, w) reach their q-quantile over (h, w), else 0."""
    flat = values.flatten(-2).float()
    level = torch.quantile(flat, q, dim=-1, keepdim=True)
    return (flat >= level).float().view_as(values)


def implicit_mask(attention: torch.Tensor, difference: torch.Tensor, threshold: float) -> torch.Tensor:
    """LEdits++'s intersection mask: the direction's word attention (h, w) and its noise difference (1, C, h, w)
    both at or above their ``threshold`` quantile; (1, 1, h, w)."""
    by_attention = quantile_mask(attention, threshold)
    by_noise = quantile_mask(difference.abs().sum(dim=1)[0], threshold)
    return (by_attention * by_noise)[None, None]


def combine(
    eps_base: torch.Tensor,
    eps_terms: torch.Tensor,
    eps_reference: torch.Tensor,
    weights: torch.Tensor,
    masks: torch.Tensor | None,
) -> torch.Tensor:
    """``eps_base + sum_k s_k M_k (eps_k - eps_ref)``: eps_base and eps_reference (1, C, h, w), eps_terms (K, C, h, w),
    weights (K,), masks (K, 1, h, w) or None (everywhere)."""
    guidance = weights.view(-1, 1, 1, 1) * (eps_terms - eps_reference)
    if masks is not None:
        guidance = guidance * masks
    return eps_base + guidance.sum(dim=0, keepdim=True)
