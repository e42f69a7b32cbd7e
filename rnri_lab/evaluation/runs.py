"""The two evaluations: reconstruction over captioned images, and PIE-Bench editing; each a list of row dicts."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image

import rnri
from rnri.core.counting import stopwatch
from rnri.core.settings import InversionSettings, with_method
from rnri_lab.evaluation.datasets import Captioned, EditCase, mask_decode
from rnri_lab.evaluation.metrics import (
    MetricModels,
    clip_score,
    lpips_distance,
    nan_mean,
    pixel_metrics,
    structure_distance,
    to_tensor,
)

Progress = Callable[[str], None]


@dataclass(frozen=True)
class MethodRun:
    """An inversion method with its options, as ``rnri.invert`` takes them."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """``name`` or ``name:key=value,...``."""
        return self.name + (":" + ",".join(f"{k}={v}" for k, v in self.options.items()) if self.options else "")


def invert_and_regenerate(pipe, image, prompt: str, target: str, run: MethodRun, settings: InversionSettings):
    """(regenerated image under ``target``, seconds of the inversion, UNet forwards, UNet backwards); ``settings``
    for every method, ``run`` the method and its options."""
    chosen = with_method(settings, run.name, run.options)
    with stopwatch(pipe.device) as inverting:
        inv = rnri.invert(pipe, prompt, image=image, settings=chosen)
    return rnri.regenerate(pipe, inv, target), inverting.seconds, inv.unet_forwards, inv.unet_backwards


@torch.no_grad()
def vae_roundtrip(pipe, image: Image.Image) -> Image.Image:
    """The image after the pipeline's VAE alone (encode, decode): the ceiling of any inversion's reconstruction."""
    side = pipe.unet.config.sample_size * pipe.vae_scale_factor
    pixels = pipe.image_processor.preprocess(image.convert("RGB").resize((side, side), Image.Resampling.LANCZOS))
    pixels = pixels.to(device=pipe.vae.device, dtype=pipe.vae.dtype)
    decoded = pipe.vae.decode(pipe.vae.encode(pixels).latent_dist.mean, return_dict=False)[0]
    out = pipe.image_processor.postprocess(decoded, output_type="pil")[0]
    return out.resize(image.size, Image.Resampling.LANCZOS)


def _image_metrics(source: torch.Tensor, other: torch.Tensor, models: MetricModels, keep=None) -> dict[str, float]:
    row = pixel_metrics(source, other, keep)
    if models.lpips is not None:
        row["lpips"] = lpips_distance(models.lpips, other, source, keep)
    return row


def reconstruct(
    pipe,
    items: list[Captioned],
    runs: list[MethodRun],
    models: MetricModels,
    settings: InversionSettings,
    progress: Progress = lambda _: None,
) -> list[dict[str, Any]]:
    """Invert and regenerate each captioned image under its caption, per method; PSNR, SSIM, LPIPS to the original.

    A ``vae`` row per image gives the VAE's own round trip, which bounds what any inversion can reach.
    """
    rows = []
    for item in items:
        image = Image.open(item.path).convert("RGB")
        source = to_tensor(image)
        rows.append(
            {"key": item.key, "method": "vae", **_image_metrics(source, to_tensor(vae_roundtrip(pipe, image)), models)}
        )
        for run in runs:
            rec, seconds, fwd, bwd = invert_and_regenerate(pipe, image, item.caption, item.caption, run, settings)
            metrics = _image_metrics(source, to_tensor(rec), models)
            rows.append(
                {
                    "key": item.key,
                    "method": run.label,
                    **metrics,
                    "seconds": seconds,
                    "unet_forwards": fwd,
                    "unet_backwards": bwd,
                }
            )
        progress(f"reconstructed {item.key}")
    return rows


def edit_metrics(source: Image.Image, edited: Image.Image, case: EditCase, models: MetricModels) -> dict[str, float]:
    """PIE-Bench's metrics of one edit: structure, background preservation (outside the mask), CLIP similarity."""
    src, tgt = to_tensor(source), to_tensor(edited)
    mask = torch.from_numpy(mask_decode(case.mask_rle, tuple(src.shape[-2:])))
    row: dict[str, float] = {}
    if models.dino is not None:
        row["structure_distance"] = structure_distance(models.dino, src, tgt)
    if (1 - mask).sum() > 0:  # PIE-Bench leaves background metrics undefined when the mask covers everything
        row.update({f"{k}_unedit_part": v for k, v in _image_metrics(src, tgt, models, 1 - mask).items()})
    if models.clip is not None:
        row["clip_similarity_source_image"] = clip_score(models.clip, src, case.original_prompt)
        row["clip_similarity_target_image"] = clip_score(models.clip, tgt, case.editing_prompt)
        row["clip_similarity_target_image_edit_part"] = clip_score(models.clip, tgt, case.editing_prompt, mask)
    return row


def pie_bench(
    pipe,
    root: Path,
    cases: list[EditCase],
    runs: list[MethodRun],
    models: MetricModels,
    settings: InversionSettings,
    out_dir: Path,
    progress: Progress = lambda _: None,
) -> list[dict[str, Any]]:
    """Edit every case per method (invert under the original prompt, regenerate under the editing prompt); score it.

    Edited images are saved as ``out_dir/<method>/annotation_images/<image_path>``, PIE-Bench's output layout.
    """
    rows = []
    for case in cases:
        source = Image.open(Path(root) / "annotation_images" / case.image_path).convert("RGB")
        for run in runs:
            edited, seconds, fwd, bwd = invert_and_regenerate(
                pipe, source, case.original_prompt, case.editing_prompt, run, settings
            )
            path = out_dir / run.label.replace("/", "_") / "annotation_images" / case.image_path
            path.parent.mkdir(parents=True, exist_ok=True)
            edited.save(path)
            rows.append(
                {
                    "key": case.key,
                    "method": run.label,
                    "editing_type_id": case.editing_type_id,
                    **edit_metrics(source, edited, case, models),
                    "seconds": seconds,
                    "unet_forwards": fwd,
                    "unet_backwards": bwd,
                }
            )
        progress(f"edited {case.key}")
    return rows


def summarize(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per method, the mean of every numeric column over its rows (finite values only)."""
    summary: dict[str, dict[str, float]] = {}
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == method]
        columns = dict.fromkeys(k for r in mine for k, v in r.items() if isinstance(v, int | float))
        summary[method] = {
            c: nan_mean([float(r[c]) for r in mine if c in r]) for c in columns if c != "editing_type_id"
        }
        summary[method]["count"] = float(len(mine))
    return summary


def summary_table(summary: dict[str, dict[str, float]]) -> str:
    """Markdown: a row per method, a column per metric (means)."""
    columns = list(dict.fromkeys(c for row in summary.values() for c in row))
    lines = ["| method | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for method, row in summary.items():
        lines.append(f"| {method} | " + " | ".join(f"{row.get(c, float('nan')):.4g}" for c in columns) + " |")
    return "\n".join(lines)
