"""What an edit cost and how good its inversion is: numbers for API clients, a short report with a word on what is
good for people, and the solver's residuals for the plot."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from rnri.core.counting import Measured
from rnri.core.masks import BlendConfig
from rnri.editor.cache import CachedInversion

GOOD_PSNR_DB = 25.0  # a reconstruction above this is hard to tell from the photo at a glance
# Below this the reconstruction differs from the photo at a glance, so edits will not look like it either. On the tiny
# shapes model every held-out shapes photo reconstructs above it and every off-world example photo (cat, coffee, ...)
# far below it (python -m rnri_lab.edit_testbeds, docs/app.md "What the reconstruction PSNR means").
POOR_PSNR_DB = 20.0
STD_TOLERANCE = 0.2  # z_T std within 1 +- this is in distribution; outside it edits degrade


@dataclass(frozen=True)
class Report:
    """One edit's numbers; ``details`` is the dict API clients get, ``summary`` the Markdown a person reads."""

    details: dict[str, Any]
    residuals: list[list[float]] = field(default_factory=list)  # per step (chain order), per iterate
    timesteps: list[int] = field(default_factory=list)

    def with_mask(self, how: str, region: torch.Tensor | None, kept: float | None, blend: BlendConfig) -> Report:
        """This report with which mask the edit used, how much it covers and the background PSNR."""
        if region is None:
            mask = {"mask": how, "mask_coverage": None, "background_psnr_db": None, "background_identical": False}
            mask["mask_reaches_everywhere"] = True
        else:
            mask = {
                "mask": how,
                "mask_coverage": round(float(region.mean()), 4),
                "background_psnr_db": db(kept),
                "background_identical": kept == math.inf,
                "mask_reaches_everywhere": kept is None or math.isnan(kept),  # no pixel outside it to compare
                "dilation": blend.dilation,
                "feather": blend.feather,
                "paste_back": blend.paste_back,
            }
        return replace(self, details=self.details | mask)

    def summary(self, limits: str | None = None) -> str:
        """The details as a short Markdown report, each number with a word on what is good; ``limits``: what the
        model cannot draw (``rnri.editor.model_limits``), said where a poor reconstruction is the model's doing."""
        d = self.details
        how = "reused from this session's cache; it took" if d["inversion_cached"] else "computed now"
        lines = [
            f"**Inversion** ({d['method']}, {how} {d['inversion_seconds']:.2f} s, "
            f"{d['inversion_unet_forwards']} UNet forwards + {d['inversion_unet_backwards']} backwards)",
            f"**Reconstruction PSNR**: {psnr_words(d['reconstruction_psnr_db'], limits)}",
            f"**z_T std** {d['z_T_std']:.2f}: {std_words(d['z_T_std'])}",
            f"**Edit**: {d['edit_seconds']:.2f} s, {d['edit_unet_forwards']} UNet forwards",
            f"**This request**: {d['request_unet_forwards']} UNet forwards + {d['request_unet_backwards']} backwards",
        ]
        if d["mask_coverage"] is not None:
            lines.append(f"**Mask**: {d['mask']}, {d['mask_coverage']:.0%} of the photo · {mask_words(d)}")
        lines += [f"⚠️ {notice}" for notice in d["notices"]]
        return "\n\n".join(lines)

    def residual_rows(self) -> list[dict[str, Any]]:
        """The plot's data: the relative residual per step (``t=...``, chain order) and iterate (0: the guess)."""
        return [
            {"step": f"t={t}", "residual": r, "iterate": f"iterate {j}"}
            for t, residuals in zip(self.timesteps, self.residuals)
            for j, r in enumerate(residuals)
        ]


def report_of(
    model: str, cached: CachedInversion, reused: bool, edit: Measured, size: tuple[int, int], notices: list[str]
) -> Report:
    """What one edit did and cost; a reused inversion costs the request nothing."""
    inv, paid = cached.inversion, [edit] if reused else [cached.cost, cached.reconstruction_cost, edit]
    details = {
        "model": model,
        "inversion_cached": reused,
        "inversion_seconds": round(cached.cost.seconds, 4),
        "reconstruction_seconds": round(cached.reconstruction_cost.seconds, 4),
        "edit_seconds": round(edit.seconds, 4),
        "inversion_unet_forwards": cached.cost.calls.forwards,
        "inversion_unet_backwards": cached.cost.calls.backwards,
        "edit_unet_forwards": edit.calls.forwards,
        "request_unet_forwards": sum(m.calls.forwards for m in paid),
        "request_unet_backwards": sum(m.calls.backwards for m in paid),
        "request_seconds": round(sum(m.seconds for m in paid), 4),
        "reconstruction_psnr_db": db(cached.psnr),
        "z_T_std": round(float(inv.latents.std()), 4),
        "method": inv.method,
        "image_size": list(size),
        "notices": notices,
        "solver_notes": solver_notes(inv.method, [list(map(float, r)) for r in inv.residuals], list(inv.timesteps)),
    }
    return Report(details, [list(map(float, r)) for r in inv.residuals], list(inv.timesteps))


def db(value: float | None) -> float | None:
    """A PSNR for JSON: rounded, None when infinite (identical) or undefined."""
    return round(value, 2) if value is not None and math.isfinite(value) else None


def psnr_words(value: float | None, limits: str | None = None) -> str:
    """A reconstruction PSNR with what it means (higher is better); ``limits``: what the model cannot draw."""
    if value is None:
        return "identical to the photo"
    if value >= GOOD_PSNR_DB:
        verdict = "good: hard to tell from the photo"
    elif value >= POOR_PSNR_DB:
        verdict = "fair: close to the photo, details differ"
    elif limits:
        verdict = f"poor: this model {limits}, so it cannot rebuild this photo and edits will not look like it"
    else:
        verdict = (
            "poor: the inversion lost the photo, so edits will not look like it (try more steps, the 'ddim' method "
            "or a larger prior weight)"
        )
    return f"{value:.2f} dB ({verdict}; higher is better, {GOOD_PSNR_DB:.0f} dB and up is good)"


def mask_words(d: dict[str, Any]) -> str:
    """What became of the photo outside a mask: kept exactly, measured, or nothing left outside it."""
    if d["mask_coverage"] == 0:
        return (
            "it covers nothing, so the edit is the photo (paint where it may change, or turn the automatic mask off)"
        )
    if d["background_identical"]:
        return "outside it: identical to the photo"
    if d["mask_reaches_everywhere"]:
        edge = ", ".join(f"{name} {d[name]:g} px" for name in ("dilation", "feather") if d[name])
        reach = f"with its edge ({edge}) it reaches every pixel" if edge else "it covers every pixel"
        fix = "paint less, or lower the dilation and feather," if edge else "paint less"
        return f"{reach}: nothing is kept as it was ({fix} to keep a background)"
    return f"outside it: PSNR {d['background_psnr_db']:.2f} dB against the photo (higher keeps more)"


def std_words(std: float) -> str:
    """z_T's standard deviation with what it means (1 is in distribution)."""
    if abs(std - 1) <= STD_TOLERANCE:
        return "in distribution (1 is ideal)"
    side = "low" if std < 1 else "high"
    return f"{side}: 1 is in distribution, and edits degrade as z_T leaves it (a larger prior weight pulls it back)"


def solver_notes(method: str, residuals: list[list[float]], timesteps: list[int]) -> list[str]:
    """A note per step whose residual rose between iterates, saying what the solver kept and what to try."""
    keeps_best = method in ("rnri", "rnri-jf", "quasi-newton")  # keep their best iterate; fixed-point, gnri the last
    notes = []
    for t, step in zip(timesteps, residuals):
        rises = [(j, a, b) for j, (a, b) in enumerate(zip(step, step[1:]), 1) if b > a]
        if not rises:
            continue
        j, a, b = rises[0]
        what = f"At step t={t} iterate {j} fitted worse than the one before (residual {a:.3g} -> {b:.3g}); "
        if keeps_best:
            more = len(step)  # one iteration more than this step ran (its guess is iterate 0)
            what += f"{method} kept the better one, so nothing was lost; if the reconstruction looks off, try {more} "
            what += "Newton iterations or the 'ddim' method."
        else:
            what += f"{method} keeps its last iterate, so this step is less exact: try fewer iterations or 'ddim'."
        notes.append(what)
    return notes
