"""rnri's real-time editor: upload a photo, say what it shows and what it should become, and get the edit.

A thin Gradio front end over the public API (``rnri.invert``, ``rnri.regenerate``). The pipeline is loaded once and
stays resident; each session's inversions are cached, so a new target prompt, edit guidance or painted mask costs
one pass of the chain instead of a new inversion. Paint on the photo to edit only there (or let the prompts find the
region). Run ``python app.py --help`` for the options; docs/app.md has the details.
"""

from __future__ import annotations

import argparse
import asyncio
import html
import logging
import math
import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple

import gradio as gr
import numpy as np
import pandas as pd
import torch
from PIL import Image

import rnri
from rnri.gpu import OFFLOAD_CHOICES, FastPath, FastPathError, apply_fast_path
from rnri.images import psnr
from rnri.session import (
    BoundedDict,
    CachedInversion,
    InputError,
    InversionCache,
    InversionKey,
    InversionSettings,
    LatestRequest,
    LocalEdit,
    Measured,
    Photo,
    background_psnr,
    check_number,
    clean_prompt,
    load_mask_layer,
    load_photo,
    mask_overlay,
    measure,
    painted_region,
    region_of,
)
from rnri.spaces_support import example_caching, gpu_task

log = logging.getLogger("rnri.app")

ASSETS = Path(__file__).parent / "assets"
EXAMPLES = [
    [str(ASSETS / "cat.jpg"), "a photo of a cat", "a photo of a tiger"],
    [str(ASSETS / "astronaut.jpg"), "a photo of an astronaut", "a marble statue of an astronaut"],
    [str(ASSETS / "coffee.jpg"), "a cup of coffee on a table", "a cup of tea on a table"],
    [str(ASSETS / "rocket.jpg"), "a rocket launching", "a rocket launching at night"],
]
DEFAULTS = InversionSettings()
METHODS = ("rnri", "ddim", "fixed-point")


class Knob(NamedTuple):
    """A numeric setting: its slider, and the range the server enforces."""

    label: str
    low: float
    high: float
    step: float  # 1: a whole number
    info: str | None = None


KNOBS = {  # InversionSettings' numeric fields, in order, then the edit's own
    "num_inference_steps": Knob("Steps", 1, 8, 1),
    "guidance_scale": Knob("Guidance scale", 1, 15, 0.5),
    "iterations": Knob("Newton iterations per step", 1, 5, 1, "rnri; for fixed-point, its iterations"),
    "prior_weight": Knob(
        "Prior weight λ", 0, 1, 0.01, "rnri: weight of the Gaussian prior that keeps z in distribution"
    ),
    "seed": Knob("Seed", 0, 2**31 - 1, 1, "of the fixed per-step noises"),
    "strength": Knob("Edit strength", 0.1, 1, 0.05, "Fraction of the chain inverted: lower keeps more structure."),
    "edit_guidance": Knob("Edit guidance", 1, 15, 0.5, "The edit's alone: changing it re-edits without inverting."),
    "dilation": Knob("Mask dilation (px)", 0, 64, 1, "Grow the painted or automatic region by this much."),
    "feather": Knob("Mask feather (px)", 0, 32, 0.5, "Soften the region's edge: the edit fades out over ~3x this."),
}
SETTINGS = tuple(KNOBS)[:6]  # InversionSettings' numeric fields; the edit's own knobs follow
BLEND = rnri.BlendConfig()
DEFAULT_HOST = "127.0.0.1"  # local only; pass --host 0.0.0.0 (or GRADIO_SERVER_NAME) to serve a network
MAX_FILE_SIZE = "30mb"  # uploads above this are refused by the server before anything is decoded
QUEUE_SIZE = 16  # waiting requests beyond this are turned away ("queue full") instead of piling up
DEBOUNCE_S = 0.4  # live edits wait for this long a pause in typing
CACHE = InversionCache(capacity=16)  # all sessions together; an entry is an inversion plus two small images
TICKETS = LatestRequest()  # tickets are unique across sessions, so a new one always changes the ticket state
# What the page's image editor uploaded after a stroke, once an event has taken it, by id: the page may name one
# upload in two events (a live re-edit and Edit). Bounded: the oldest go first.
TAKEN = BoundedDict(capacity=32)
SHOWN = BoundedDict(capacity=1024)  # per session: what its last edit was made of, so a live re-edit can skip it

MASK_RGB = (255, 0, 200)  # the brush's colour, magenta: rare in photos
BRUSH = gr.Brush(colors=[("#ff00c8", 0.5)], color_mode="fixed", default_size=24)  # translucent: the photo shows
ERASER = gr.Eraser(default_size=24)


# The edited image, the reconstruction, the summary (Markdown), the residual plot's data, the details, and the
# photo tinted where the edit acts (all of it without a mask).
EditOutputs = tuple[Image.Image, Image.Image, str, pd.DataFrame, dict[str, Any], Image.Image]


@dataclass(frozen=True)
class Resident:
    """The pipeline the app runs on, and a banner when it is not the one that was asked for."""

    pipe: Any  # a diffusers LatentConsistencyModelPipeline
    model: str
    banner: str = ""


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Command-line options; each defaults to its environment variable."""
    parser = argparse.ArgumentParser(description="rnri real-time photo editor (Gradio)")
    parser.add_argument(
        "--model",
        default=os.environ.get("RNRI_MODEL", rnri.DEFAULT_MODEL),
        help="Hub id or local folder of an LCM, Stable Diffusion (1.5, 2.x, XL) or Turbo model, or 'tiny' "
        "(env RNRI_MODEL; default %(default)s)",
    )
    parser.add_argument(
        "--lora",
        default=os.environ.get("RNRI_LORA"),
        help="an LCM-LoRA (Hub id or folder) fused into --model, e.g. latent-consistency/lcm-lora-sdv1-5 "
        "(env RNRI_LORA)",
    )
    parser.add_argument(
        "--host", default=os.environ.get("GRADIO_SERVER_NAME", DEFAULT_HOST), help="address to bind (%(default)s)"
    )
    parser.add_argument(
        "--port", type=int, default=os.environ.get("GRADIO_SERVER_PORT", "7860"), help="port (%(default)s)"
    )
    parser.add_argument(
        "--offload",
        choices=OFFLOAD_CHOICES,
        default=os.environ.get("RNRI_OFFLOAD", FastPath.cpu_offload),
        help="model CPU offload: auto is on for GPUs under 6 GiB (env RNRI_OFFLOAD; default %(default)s)",
    )
    parser.add_argument(
        "--channels-last",
        action="store_true",
        default=os.environ.get("RNRI_CHANNELS_LAST", "").lower() in ("1", "true"),
        help="NHWC weights for the UNet and VAE (env RNRI_CHANNELS_LAST=1; default off)",
    )
    return parser.parse_args(argv)


def load_resident(model: str, lora: str | None = None) -> Resident:
    """Load ``model`` (with an LCM-LoRA) once; if that fails, the tiny model, with a banner saying what happened."""
    try:
        return Resident(rnri.load_pipeline(model, lora=lora), model if lora is None else f"{model} + {lora}")
    except Exception as error:  # ModelLoadError above all, but no loading failure may stop the app starting
        log.warning("could not load %s, running on the tiny model: %s", model, error)
        detail = str(error) if isinstance(error, rnri.ModelLoadError) else f"{type(error).__name__}: {error}"
        escaped = html.escape(detail).replace("\n", "<br>")
        banner = (
            f"<div role='alert' id='model-banner' style='border:2px solid #d97706;background:#fffbeb;color:#451a03;"
            f"padding:10px 14px;border-radius:8px'><b>Running on the tiny demo model: its images are noise.</b> "
            f"The model {html.escape(repr(model))} could not be loaded.<br><small>{escaped}</small><br>"
            "To fix: connect to the internet once so the weights are cached, or start with "
            "<code>python app.py --model /path/to/model</code> (or <code>RNRI_MODEL=...</code>).</div>"
        )
        return Resident(rnri.load_pipeline("tiny"), "tiny", banner)


def speed_up(pipe: Any, args: argparse.Namespace) -> None:
    """Apply the fast GPU path's measured defaults and the chosen knobs (no compiling: see docs/deploy.md)."""
    try:
        fast = apply_fast_path(pipe, FastPath(channels_last=args.channels_last, cpu_offload=args.offload))
    except (FastPathError, ImportError, RuntimeError) as error:  # offload without accelerate, for one
        log.warning("the fast path could not be applied, running without it: %s", error)
        return
    log.info("fast path: %s%s", ", ".join(fast.applied), "".join(f"; skipped {s}" for s in fast.skipped))


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn every failure into a ``gr.Error`` whose message the user sees; the inputs stay as they were."""
    try:
        yield
    except gr.Error:
        raise
    except rnri.InversionError as error:
        message = f"The inversion failed: {error}. Try the 'ddim' method or a larger prior weight."
        raise gr.Error(message, print_exception=False) from error
    except (InputError, ValueError, TypeError) as error:  # the user's to fix: no traceback in the server log
        raise gr.Error(str(error), print_exception=False) from error
    except Exception as error:
        log.exception("edit failed")
        raise gr.Error(f"The edit failed ({type(error).__name__}: {error}). Your inputs are kept.") from error


@contextmanager
def caught_warnings(notices: list[str], prefix: str) -> Iterator[None]:
    """Collect the warnings raised inside the block (a prompt cut to fit the text encoder, ...) as notices."""
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        yield
    notices += [f"{prefix}: {r.message}" for r in records if issubclass(r.category, UserWarning)]


def session_of(request: gr.Request | None) -> str:
    return (request.session_hash if request is not None else None) or "anonymous"


def file_of(value: dict[str, Any] | str | None, what: str) -> str | None:
    """A file's path, from a component's raw value (a FileData dict) or a path."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict) and value.get("path"):
        return str(value["path"])
    raise InputError(f"The {what} could not be read; please upload it again.")


def uploads_of(request: gr.Request | None) -> list[dict[str, Any]]:
    """Where this session's image editors keep what the page uploads after each stroke (by id).

    Gradio gives a session its own copy of a component once an event updates it (an example's photo does), and
    the page then uploads to that copy; so look in the session's components, as Gradio's own preprocessing does.
    """
    try:
        state = request.request.app.get_blocks().state_holder[request.session_hash]
        return [block.blob_storage for block in state.blocks_config.blocks.values() if hasattr(block, "blob_storage")]
    except AttributeError:  # called directly, without a page behind the request
        return []


def take_upload(blob_id: str, request: gr.Request | None) -> Any:
    """The photo and layers the page uploaded under ``blob_id`` (Gradio's ``EditorDataBlobs``), or None."""
    if blob_id not in TAKEN:
        for uploads in uploads_of(request):
            if blob_id in uploads:
                TAKEN[blob_id] = uploads.pop(blob_id)  # taken, as Gradio's preprocessing takes it
    return TAKEN.get(blob_id)


def editor_files(
    value: dict[str, Any] | None, request: gr.Request | None
) -> tuple[str | bytes | None, list[str | bytes]]:
    """The photo and the painted layers in the image editor's raw value.

    API clients send files (``{"background": file, "layers": [file, ...], "composite": ...}``); the page sends the
    id of what it uploaded after the last stroke, or files.
    """
    if value is None:
        return None, []
    if not isinstance(value, dict):
        raise InputError("The photo editor's value could not be read; please upload the photo again.")
    if value.get("id"):
        blobs = take_upload(value["id"], request)
        if blobs is None:  # the page names an upload it has not finished, or one pushed out by later strokes
            raise InputError("The photo in the editor has not reached the server; press Edit again in a moment.")
        return blobs.background, [layer for layer in blobs.layers if layer]
    layers = [file_of(layer, "mask layer") for layer in value.get("layers") or [] if layer]
    return file_of(value.get("background"), "photo"), layers


class Upload(NamedTuple):
    """What to edit: the photo (a file, or the bytes the page sent) and the layers that mark where."""

    photo: str | bytes | None
    layers: tuple[str | bytes, ...]


def upload_of(photo: Any, mask: Any, editor: Any, request: gr.Request | None) -> Upload:
    """The ``photo`` and ``mask`` files (API clients), else the editor's photo, with the editor's layers."""
    background, layers = editor_files(editor, request)
    photo_file, mask_file = file_of(photo, "photo"), file_of(mask, "mask")
    return Upload(photo_file if photo_file is not None else background, (*layers, *filter(None, [mask_file])))


def knob_value(name: str, value: Any) -> float | int:
    """A numeric setting, checked against its slider's range (API clients can send anything)."""
    knob = KNOBS[name]
    return check_number(knob.label, value, knob.low, knob.high, integer=knob.step == 1)


def flag(label: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise InputError(f"{label} must be true or false, got {value!r}.")
    return value


def settings_of(method: str, *values: Any) -> InversionSettings:
    """The inversion settings from the form's raw values, in ``SETTINGS`` order, checked."""
    if method not in METHODS:
        raise InputError(f"Unknown method {method!r}; choose one of {', '.join(METHODS)}.")
    values = {name: knob_value(name, value) for name, value in zip(SETTINGS, values)}
    return InversionSettings(method=method, **values).relevant()


def local_of(auto: Any, dilation: Any, feather: Any, paste_back: Any) -> LocalEdit:
    """The local-edit options from the form's raw values, checked."""
    blend = rnri.BlendConfig(
        knob_value("dilation", dilation), knob_value("feather", feather), flag("Paste back", paste_back)
    )
    return LocalEdit(flag("Automatic mask", auto), blend)


class Form(NamedTuple):
    """The ``/edit`` endpoint's raw inputs, in order; unchecked (API clients can send anything)."""

    photo: Any  # a file (API clients; hidden on the page)
    source: Any
    target: Any
    method: Any
    steps: Any
    guidance: Any
    iterations: Any
    prior_weight: Any
    seed: Any
    strength: Any
    edit_guidance: Any
    auto_mask: Any = False
    dilation: Any = BLEND.dilation
    feather: Any = BLEND.feather
    paste_back: Any = BLEND.paste_back
    mask: Any = None  # a mask file, white = edit (API clients; hidden on the page)
    editor: Any = None  # the page's photo with the painted layers


@dataclass(frozen=True)
class EditRequest:
    """One edit, its inputs checked (the photo and the mask are checked when they are loaded)."""

    upload: Upload
    source: str
    target: str
    settings: InversionSettings
    edit_guidance: float
    local: LocalEdit


def request_of(form: Form, request: gr.Request | None = None) -> EditRequest:
    """An ``EditRequest`` from the ``/edit`` endpoint's raw inputs."""
    numbers = (form.steps, form.guidance, form.iterations, form.prior_weight, form.seed, form.strength)
    return EditRequest(
        upload_of(form.photo, form.mask, form.editor, request),
        clean_prompt(form.source, "source prompt (what the photo shows)"),
        clean_prompt(form.target, "target prompt (what the photo should become)"),
        settings_of(form.method, *numbers),
        knob_value("edit_guidance", form.edit_guidance),
        local_of(form.auto_mask, form.dilation, form.feather, form.paste_back),
    )


@gpu_task
def invert_photo(photo: Photo, source: str, settings: InversionSettings, progress: gr.Progress) -> CachedInversion:
    """Invert ``photo`` under ``source`` and reconstruct it, reporting progress per inverted step."""
    notices: list[str] = []

    def on_step(done: int, total: int, residuals: list[float]) -> None:
        progress((done, total), desc="Inverting", unit="steps")

    with caught_warnings(notices, "Source prompt"), measure(RESIDENT.pipe.unet) as cost:
        inv = rnri.invert(RESIDENT.pipe, source, image=photo.image, callback=on_step, **settings.invert_kwargs())
    progress(None)
    with caught_warnings([], "Source prompt"), measure(RESIDENT.pipe.unet) as rebuild:
        reconstruction = rnri.regenerate(RESIDENT.pipe, inv, source)
    return CachedInversion(inv, reconstruction, psnr(photo.image, reconstruction), cost, rebuild, tuple(notices))


class Regenerated(NamedTuple):
    image: Image.Image
    auto_mask: Image.Image | None  # the automatic mask, when it was estimated now
    cost: Measured
    notices: list[str]


@gpu_task
def estimate_mask(inv: rnri.Inversion, target: str, guidance: float) -> Image.Image:
    """Where the edit acts, estimated from the two prompts (``rnri.auto_mask``)."""
    with caught_warnings([], "Target prompt"):
        return rnri.auto_mask(RESIDENT.pipe, inv, target, guidance_scale=guidance)


@gpu_task
def regenerate_photo(inv: rnri.Inversion, target: str, guidance: float, mask: Any, blend: Any) -> Regenerated:
    """The edit under ``target`` where ``mask`` lets it act: a region, ``"auto"`` (estimated now), or None (all)."""
    notices: list[str] = []
    auto = None
    with caught_warnings(notices, "Target prompt"), measure(RESIDENT.pipe.unet) as cost:
        if isinstance(mask, str):
            mask = auto = rnri.auto_mask(RESIDENT.pipe, inv, target, guidance_scale=guidance)
        edited = rnri.regenerate(RESIDENT.pipe, inv, target, guidance_scale=guidance, mask=mask, blend=blend)
    return Regenerated(edited, auto, cost, notices)


def residual_frame(inv: rnri.Inversion) -> pd.DataFrame:
    """The solver's relative residual per step (chain order, noisiest first) and iterate (0: the initial guess)."""
    rows = [
        {"step": f"t={t}", "residual": r, "iterate": f"iterate {j}"}
        for t, residuals in zip(inv.timesteps, inv.residuals)
        for j, r in enumerate(residuals)
    ]
    return pd.DataFrame(rows, columns=["step", "residual", "iterate"])


def db(value: float) -> float | None:
    """A PSNR for JSON: rounded, None when infinite (identical) or undefined."""
    return round(value, 2) if math.isfinite(value) else None


def details_of(cached: CachedInversion, reused: bool, edit: Measured, size: tuple[int, int], notices: list[str]):
    """What happened, as numbers (the ``details`` output; the Markdown summary is made from it)."""
    inv, paid = cached.inversion, [edit] if reused else [cached.cost, cached.reconstruction_cost, edit]
    return {
        "model": RESIDENT.model,
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
    }


def mask_details(how: str, region: Any, photo: Photo, edited: Image.Image, blend: rnri.BlendConfig) -> dict[str, Any]:
    """Which mask the edit used (painted, auto, auto reused, none), how much it covers, and the background PSNR."""
    if region is None:
        return {"mask": how, "mask_coverage": None, "background_psnr_db": None, "background_identical": False}
    kept = background_psnr(photo.image, edited, region, blend)
    return {
        "mask": how,
        "mask_coverage": round(float(region.mean()), 4),
        "background_psnr_db": db(kept),
        "background_identical": kept == math.inf,
        "dilation": blend.dilation,
        "feather": blend.feather,
        "paste_back": blend.paste_back,
    }


def summary_of(d: dict[str, Any]) -> str:
    """The details as a short Markdown report."""
    how = "reused from this session's cache; it took" if d["inversion_cached"] else "computed now"
    psnr_text = "identical" if d["reconstruction_psnr_db"] is None else f"{d['reconstruction_psnr_db']:.2f} dB"
    lines = [
        f"**Inversion** ({d['method']}, {how} {d['inversion_seconds']:.2f} s, "
        f"{d['inversion_unet_forwards']} UNet forwards + {d['inversion_unet_backwards']} backwards)",
        f"**Reconstruction PSNR**: {psnr_text} · z_T std {d['z_T_std']:.2f} (1 is in distribution)",
        f"**Edit**: {d['edit_seconds']:.2f} s, {d['edit_unet_forwards']} UNet forwards",
        f"**This request**: {d['request_unet_forwards']} UNet forwards + {d['request_unet_backwards']} backwards",
    ]
    if d["mask_coverage"] is not None:
        kept = "identical" if d["background_identical"] else f"PSNR {d['background_psnr_db']} dB"
        lines.append(f"**Mask**: {d['mask']}, {d['mask_coverage']:.0%} of the photo · outside it: {kept}")
    lines += [f"⚠️ {notice}" for notice in d["notices"]]
    return "\n\n".join(lines)


def mask_for(painted: Any, request: EditRequest, cached: CachedInversion) -> tuple[Any, str]:
    """The mask to edit with and what it is: the painted one; else, with auto on, the automatic one; else none."""
    if painted is not None:
        return painted, "painted"
    if not request.local.auto:
        return None, "none"
    known = cached.auto_masks.get((request.target, request.edit_guidance))
    return (known, "auto (reused)") if known is not None else ("auto", "auto")


def inversion_of(
    photo: Photo, request: EditRequest, session: str, may_invert: bool, progress: gr.Progress
) -> tuple[CachedInversion, bool] | None:
    """The session's cached inversion of ``photo`` and whether it was cached; inverts when not (if ``may_invert``).

    The mask is no part of the cache key: painting, clearing or changing how it blends re-edits from the cache.
    """
    key = InversionKey(session, photo.digest, request.source, request.settings)
    cached = CACHE.get(key)
    if cached is not None or not may_invert:
        return None if cached is None else (cached, True)
    cached = invert_photo(photo, request.source, request.settings, progress)
    CACHE.put(key, cached)
    return cached, False


def run_edit(request: EditRequest, session: str, may_invert: bool, progress: gr.Progress) -> EditOutputs | None:
    """Edit with the session's cached inversion, inverting first when there is none (and ``may_invert``)."""
    photo = load_photo(request.upload.photo)
    painted = painted_region([load_mask_layer(layer) for layer in request.upload.layers], photo.image.size)
    shown = (photo.digest, None if painted is None else hash(painted.numpy().tobytes()), replace(request, upload=None))
    if not may_invert and SHOWN.get(session) == shown:
        return None  # a live re-edit of what the page shows already (the editor reports an upload as a change)
    found = inversion_of(photo, request, session, may_invert, progress)
    if found is None:
        return None
    cached, reused = found
    SHOWN[session] = shown
    mask, how = mask_for(painted, request, cached)
    blend = request.local.blend
    out = regenerate_photo(cached.inversion, request.target, request.edit_guidance, mask, blend)
    if out.auto_mask is not None:
        cached.remember_auto_mask(request.target, request.edit_guidance, out.auto_mask)
        mask = out.auto_mask
    region = None if mask is None else region_of(mask, photo.image.size)
    notices = [*photo.notices, *cached.notices, *out.notices]
    details = details_of(cached, reused, out.cost, out.image.size, notices)
    details |= mask_details(how, region, photo, out.image, blend)
    # Without a mask the edit acts everywhere, and the overlay says so (Gradio's example cache needs an image too).
    overlay = mask_overlay(
        photo.image, torch.ones(1, 1, photo.image.height, photo.image.width) if region is None else region, blend
    )
    return out.image, cached.reconstruction, summary_of(details), residual_frame(cached.inversion), details, overlay


def edit(
    photo: dict[str, Any] | str | None,
    source: str,
    target: str,
    method: str = DEFAULTS.method,
    steps: float = DEFAULTS.num_inference_steps,
    guidance: float = DEFAULTS.guidance_scale,
    iterations: float = DEFAULTS.iterations,
    prior_weight: float = DEFAULTS.prior_weight,
    seed: float = DEFAULTS.seed,
    strength: float = DEFAULTS.strength,
    edit_guidance: float = DEFAULTS.guidance_scale,
    auto_mask: bool = False,
    dilation: float = BLEND.dilation,
    feather: float = BLEND.feather,
    paste_back: bool = BLEND.paste_back,
    mask: dict[str, Any] | str | None = None,
    editor: dict[str, Any] | None = None,
    request: gr.Request | None = None,
    progress: gr.Progress = gr.Progress(),  # noqa: B008 (Gradio's way of asking for a progress bar)
) -> EditOutputs:
    """Edit ``photo`` from ``source`` (what it shows) to ``target`` (what it should become).

    ``mask`` (white = edit) or the layers painted in ``editor`` confine the edit; with nothing painted and
    ``auto_mask``, the prompts say where. Returns the edited image, the reconstruction, a summary, the solver's
    residuals, the details as numbers and the mask used over the photo (all of it tinted without a mask).
    """
    settings = (method, steps, guidance, iterations, prior_weight, seed, strength, edit_guidance)
    form = Form(photo, source, target, *settings, auto_mask, dilation, feather, paste_back, mask, editor)
    with user_errors():
        outputs = run_edit(request_of(form, request), session_of(request), True, progress)
    for notice in outputs[4]["notices"] if not outputs[4]["inversion_cached"] else []:
        gr.Warning(notice)
    return outputs


def live_edit(request: gr.Request, *inputs: Any) -> tuple[Any, ...]:
    """Re-edit as the target prompt is typed or the mask painted, only from a cached inversion; else change nothing."""
    try:
        outputs = run_edit(request_of(Form(*inputs), request), session_of(request), False, gr.Progress())
    except Exception:  # half-typed input is normal here; Edit reports errors
        outputs = None
    return outputs if outputs is not None else tuple(gr.skip() for _ in range(6))


def edit_example(editor: dict[str, Any] | None, source: str, target: str, request: gr.Request) -> EditOutputs:
    """An example's edit: its photo is in the editor (Gradio caches these lazily on a Space)."""
    return edit(None, source, target, editor=editor, request=request)


async def wait_for_pause(request: gr.Request) -> int | dict[str, Any]:
    """A new ticket if no keystroke of this session came after ours within ``DEBOUNCE_S``; otherwise no change."""
    session = session_of(request)
    ticket = TICKETS.issue(session)
    await asyncio.sleep(DEBOUNCE_S)
    return ticket if TICKETS.is_latest(session, ticket) else gr.skip()


def clear_mask(editor: dict[str, Any] | None, request: gr.Request) -> dict[str, Any]:
    """The editor's photo without the painted layers."""
    with user_errors():
        background, _ = editor_files(editor, request)
        if background is None:
            return gr.skip()
        photo = load_mask_layer(background, "image")
        return {"background": photo, "layers": [], "composite": photo}


def paint_auto_mask(request: gr.Request, *inputs: Any) -> dict[str, Any]:
    """The editor's photo with the automatic mask as its painted layer, to correct with the brush and eraser."""
    with user_errors():
        form = Form(*inputs)
        edit_request = request_of(form._replace(photo=None, mask=None), request)
        background = edit_request.upload.photo
        if background is None:
            raise InputError("Upload a photo first.")
        cached, _ = inversion_of(load_photo(background), edit_request, session_of(request), True, gr.Progress())
        target, guidance = edit_request.target, edit_request.edit_guidance
        mask = cached.auto_masks.get((target, guidance))
        if mask is None:
            mask = estimate_mask(cached.inversion, target, guidance)
            cached.remember_auto_mask(target, guidance, mask)
        photo = load_mask_layer(background, "image")
    marks = np.asarray(mask.resize(photo.size, Image.Resampling.NEAREST)) > 0
    layer = np.zeros((photo.height, photo.width, 4), dtype=np.uint8)
    layer[marks] = (*MASK_RGB, 128)  # as the brush paints it
    return {"background": photo, "layers": [Image.fromarray(layer, "RGBA")], "composite": None}


def slider(name: str, value: float) -> gr.Slider:
    knob = KNOBS[name]
    return gr.Slider(knob.low, knob.high, value=value, step=knob.step, label=knob.label, info=knob.info)


class Page(NamedTuple):
    """The input side of the page: the ``/edit`` endpoint's inputs in order, and the mask buttons."""

    inputs: list[gr.components.Component]
    editor: gr.ImageEditor
    clear: gr.Button
    paint_auto: gr.Button


def inputs_column() -> Page:
    """The photo editor, the two prompts, the local-edit and the advanced settings."""
    editor = gr.ImageEditor(
        label="Photo: paint where it may change (nothing painted: everywhere)",
        type="filepath",
        sources=["upload", "clipboard"],
        brush=BRUSH,
        eraser=ERASER,
        layers=False,
        transforms=(),
        format="png",
        height=420,
        elem_id="photo",
    )
    clear = gr.Button("Clear mask", size="sm", elem_id="clear-mask")
    source = gr.Textbox(label="Source prompt", placeholder="what the photo shows: a cat on a sofa", elem_id="source")
    target = gr.Textbox(
        label="Target prompt", placeholder="what it should become: a tiger on a sofa", elem_id="target"
    )
    with gr.Accordion("Local edit", open=False):
        auto_mask = gr.Checkbox(
            False, label="Automatic mask", info="With nothing painted, let the prompts say where.", elem_id="auto-mask"
        )
        paint_auto = gr.Button("Paint over the automatic mask", size="sm")
        dilation = slider("dilation", BLEND.dilation)
        feather = slider("feather", BLEND.feather)
        paste_back = gr.Checkbox(
            BLEND.paste_back, label="Paste back", info="Keep every pixel outside the mask exactly as it was."
        )
    with gr.Accordion("Advanced", open=False):
        method = gr.Radio(list(METHODS), value=DEFAULTS.method, label="Inversion method")
        steps = slider("num_inference_steps", DEFAULTS.num_inference_steps)
        guidance = slider("guidance_scale", DEFAULTS.guidance_scale)
        iterations = slider("iterations", DEFAULTS.iterations)
        prior_weight = slider("prior_weight", DEFAULTS.prior_weight)
        knob = KNOBS["seed"]
        seed = gr.Number(DEFAULTS.seed, precision=0, minimum=knob.low, maximum=knob.high, label=knob.label)
        strength = slider("strength", DEFAULTS.strength)
        edit_guidance = slider("edit_guidance", DEFAULTS.guidance_scale)
    photo = gr.Image(label="Photo file (API)", type="filepath", visible=False)  # the page uses the editor
    mask = gr.Image(label="Mask file (API), white = edit", type="filepath", visible=False)
    settings = [method, steps, guidance, iterations, prior_weight, seed, strength, edit_guidance]
    inputs = [photo, source, target, *settings, auto_mask, dilation, feather, paste_back, mask, editor]
    return Page(inputs, editor, clear, paint_auto)


def outputs_column() -> list[gr.components.Component]:
    """The edit, the reconstruction beside it, the mask used, and what happened."""
    images = dict(type="pil", format="png", interactive=False, buttons=["download", "fullscreen"])
    with gr.Row():
        edited = gr.Image(label="Edited", elem_id="edited", **images)
        reconstruction = gr.Image(label="Reconstruction (source prompt)", elem_id="reconstruction", **images)
    with gr.Row():
        overlay = gr.Image(label="Mask used (tinted: where the edit acts)", elem_id="mask-overlay", **images)
        summary = gr.Markdown("Upload a photo, describe it, say what it should become, and press **Edit**.")
    plot = gr.LinePlot(
        x="step",
        y="residual",
        color="iterate",
        label="Solver residual per step (iterate 0: the initial guess)",
        x_title="step (chain order)",
        y_title="||S(z) - y|| / ||y||",
        color_title="iterate",
        sort="-x",
        elem_id="residual-plot",
    )
    with gr.Accordion("Details", open=False):
        details = gr.JSON(label="Details")
    return [edited, reconstruction, summary, plot, details, overlay]


def build_demo(banner: str = "") -> gr.Blocks:
    """The editor's page and events."""
    with gr.Blocks(title="rnri editor", analytics_enabled=False, delete_cache=(1800, 3600)) as demo:
        gr.HTML(banner, visible=bool(banner))
        gr.Markdown(
            "# rnri: real-time photo editing\nInverts your photo on a Latent Consistency Model with Regularized "
            f"Newton-Raphson Inversion, then regenerates it under the new prompt. Model: `{RESIDENT.model}` "
            f"({rnri.backbone_of(RESIDENT.pipe).name} backbone) on "
            f"`{RESIDENT.pipe.device}`. Change the target prompt or paint a mask and the edit updates at once."
        )
        with gr.Row():
            with gr.Column(scale=2):
                page = inputs_column()
                button = gr.Button("Edit", variant="primary", elem_id="edit-button")
            with gr.Column(scale=3):
                outputs = outputs_column()
        inputs, source, target = page.inputs, page.inputs[1], page.inputs[2]
        # preprocess=False: the photo reaches load_photo unopened (Gradio's own Pillow call would fail on a
        # non-image with a bare "Error"), and every value is checked by the handler itself.
        gpu = dict(inputs=inputs, outputs=outputs, preprocess=False, concurrency_limit=1, concurrency_id="gpu")
        gr.on([button.click, source.submit, target.submit], edit, api_name="edit", **gpu)
        caching = example_caching()  # lazily cached on a Space; locally run when clicked, through the session cache
        examples = gr.Examples(
            EXAMPLES,
            inputs=[page.editor, source, target],
            outputs=outputs,
            fn=edit_example,
            preprocess=False,
            label="Examples (run when clicked)",
            **caching,
        )
        if not caching["cache_examples"]:
            examples.load_input_event.then(edit, api_visibility="private", **gpu)
        hidden = dict(show_progress="hidden", api_visibility="private")
        page.clear.click(clear_mask, page.editor, page.editor, preprocess=False, **hidden)
        page.paint_auto.click(
            paint_auto_mask, inputs, page.editor, preprocess=False, concurrency_limit=1, concurrency_id="gpu", **hidden
        )
        ticket = gr.State()
        auto_mask, dilation, feather, paste_back = inputs[11:15]
        live = [target.input, page.editor.change, auto_mask.input, dilation.release, feather.release, paste_back.input]
        gr.on(live, wait_for_pause, None, ticket, trigger_mode="multiple", concurrency_limit=None, **hidden)
        ticket.change(live_edit, trigger_mode="always_last", **gpu, **hidden)
    return demo.queue(max_size=QUEUE_SIZE, default_concurrency_limit=1)


def launch(host: str = DEFAULT_HOST, port: int | None = None, **options: Any) -> Any:
    """Serve the editor: no share link, bounded uploads; ``options`` go to ``gr.Blocks.launch``."""
    return demo.launch(server_name=host, server_port=port, share=False, max_file_size=MAX_FILE_SIZE, **options)


ARGS = parse_args(sys.argv[1:] if __name__ == "__main__" else [])
RESIDENT = load_resident(ARGS.model, ARGS.lora)
speed_up(RESIDENT.pipe, ARGS)
demo = build_demo(RESIDENT.banner)

if __name__ == "__main__":
    launch(ARGS.host, ARGS.port)
