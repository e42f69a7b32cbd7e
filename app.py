"""rnri's real-time editor: upload a photo, say what it shows and what it should become, and get the edit.

A thin Gradio front end over the public API (``rnri.invert``, ``rnri.regenerate``). The pipeline is loaded once and
stays resident; each session's inversions are cached, so a new target prompt or edit guidance costs one pass of
the chain instead of a new inversion. Run ``python app.py --help`` for the options; docs/app.md has the details.
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import gradio as gr
import pandas as pd
from PIL import Image

import rnri
from rnri.images import psnr
from rnri.session import (
    CachedInversion,
    InputError,
    InversionCache,
    InversionKey,
    InversionSettings,
    LatestRequest,
    Measured,
    Photo,
    check_number,
    clean_prompt,
    load_photo,
    measure,
)

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
}
SETTINGS = tuple(KNOBS)[:-1]
DEFAULT_HOST = "127.0.0.1"  # local only; pass --host 0.0.0.0 (or GRADIO_SERVER_NAME) to serve a network
MAX_FILE_SIZE = "30mb"  # uploads above this are refused by the server before anything is decoded
QUEUE_SIZE = 16  # waiting requests beyond this are turned away ("queue full") instead of piling up
DEBOUNCE_S = 0.4  # live edits wait for this long a pause in typing
CACHE = InversionCache(capacity=16)  # all sessions together; an entry is an inversion plus two small images
TICKETS = LatestRequest()  # tickets are unique across sessions, so a new one always changes the ticket state


# The edited image, the reconstruction, the summary (Markdown), the residual plot's data, the details.
EditOutputs = tuple[Image.Image, Image.Image, str, pd.DataFrame, dict[str, Any]]


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
        help="Hub id, local folder, or 'tiny' (env RNRI_MODEL; default %(default)s)",
    )
    parser.add_argument(
        "--host", default=os.environ.get("GRADIO_SERVER_NAME", DEFAULT_HOST), help="address to bind (%(default)s)"
    )
    parser.add_argument(
        "--port", type=int, default=os.environ.get("GRADIO_SERVER_PORT", "7860"), help="port (%(default)s)"
    )
    return parser.parse_args(argv)


def load_resident(model: str) -> Resident:
    """Load ``model`` once; if that fails, the tiny model, with a banner saying what happened and how to fix it."""
    try:
        return Resident(rnri.load_pipeline(model), model)
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


def path_of(photo: dict[str, Any] | str | None) -> str | None:
    """The uploaded file's path, from the image component's raw value (a FileData dict) or a path."""
    if photo is None or isinstance(photo, str):
        return photo
    if isinstance(photo, dict) and photo.get("path"):
        return str(photo["path"])
    raise InputError("The upload could not be read; please upload the file again.")


def knob_value(name: str, value: Any) -> float | int:
    """A numeric setting, checked against its slider's range (API clients can send anything)."""
    knob = KNOBS[name]
    return check_number(knob.label, value, knob.low, knob.high, integer=knob.step == 1)


def settings_of(method: str, *values: Any) -> InversionSettings:
    """The inversion settings from the form's raw values, in ``SETTINGS`` order, checked."""
    if method not in METHODS:
        raise InputError(f"Unknown method {method!r}; choose one of {', '.join(METHODS)}.")
    values = {name: knob_value(name, value) for name, value in zip(SETTINGS, values)}
    return InversionSettings(method=method, **values).relevant()


@dataclass(frozen=True)
class EditRequest:
    """One edit, its inputs checked (the photo is checked when it is loaded)."""

    photo_path: str | None
    source: str
    target: str
    settings: InversionSettings
    edit_guidance: float


def request_of(photo: dict[str, Any] | str | None, source: str, target: str, method: str, *values: Any) -> EditRequest:
    """An ``EditRequest`` from the ``/edit`` endpoint's raw inputs (``values``: the numeric settings, in order)."""
    return EditRequest(
        path_of(photo),
        clean_prompt(source, "source prompt (what the photo shows)"),
        clean_prompt(target, "target prompt (what the photo should become)"),
        settings_of(method, *values[:-1]),
        knob_value("edit_guidance", values[-1]),
    )


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


def residual_frame(inv: rnri.Inversion) -> pd.DataFrame:
    """The solver's relative residual per step (chain order, noisiest first) and iterate (0: the initial guess)."""
    rows = [
        {"step": f"t={t}", "residual": r, "iterate": f"iterate {j}"}
        for t, residuals in zip(inv.timesteps, inv.residuals)
        for j, r in enumerate(residuals)
    ]
    return pd.DataFrame(rows, columns=["step", "residual", "iterate"])


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
        "reconstruction_psnr_db": round(cached.psnr, 2) if math.isfinite(cached.psnr) else None,
        "z_T_std": round(float(inv.latents.std()), 4),
        "method": inv.method,
        "image_size": list(size),
        "notices": notices,
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
    lines += [f"⚠️ {notice}" for notice in d["notices"]]
    return "\n\n".join(lines)


def run_edit(request: EditRequest, session: str, may_invert: bool, progress: gr.Progress) -> EditOutputs | None:
    """Edit with the session's cached inversion, inverting first when there is none (and ``may_invert``)."""
    photo = load_photo(request.photo_path)
    key = InversionKey(session, photo.digest, request.source, request.settings)
    cached = CACHE.get(key)
    reused = cached is not None
    if cached is None:
        if not may_invert:
            return None
        cached = invert_photo(photo, request.source, request.settings, progress)
        CACHE.put(key, cached)
    notices = [*photo.notices, *cached.notices]
    with caught_warnings(notices, "Target prompt"), measure(RESIDENT.pipe.unet) as cost:
        edited = rnri.regenerate(RESIDENT.pipe, cached.inversion, request.target, guidance_scale=request.edit_guidance)
    details = details_of(cached, reused, cost, edited.size, notices)
    return edited, cached.reconstruction, summary_of(details), residual_frame(cached.inversion), details


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
    request: gr.Request | None = None,
    progress: gr.Progress = gr.Progress(),  # noqa: B008 (Gradio's way of asking for a progress bar)
) -> EditOutputs:
    """Edit ``photo`` from ``source`` (what it shows) to ``target`` (what it should become).

    Returns the edited image, the reconstruction, a summary, the solver's residuals and the details as numbers.
    """
    values = (steps, guidance, iterations, prior_weight, seed, strength, edit_guidance)
    with user_errors():
        outputs = run_edit(request_of(photo, source, target, method, *values), session_of(request), True, progress)
    for notice in outputs[4]["notices"] if not outputs[4]["inversion_cached"] else []:
        gr.Warning(notice)
    return outputs


def live_edit(
    photo: dict[str, Any] | str | None,
    source: str,
    target: str,
    method: str,
    steps: float,
    guidance: float,
    iterations: float,
    prior_weight: float,
    seed: float,
    strength: float,
    edit_guidance: float,
    request: gr.Request,
) -> tuple[Any, ...]:
    """Re-edit while the target prompt is typed, only when the inversion is cached; otherwise change nothing."""
    values = (steps, guidance, iterations, prior_weight, seed, strength, edit_guidance)
    try:
        edit_request = request_of(photo, source, target, method, *values)
        outputs = run_edit(edit_request, session_of(request), False, gr.Progress())
    except Exception:  # half-typed input is normal here; Edit reports errors
        outputs = None
    return outputs if outputs is not None else tuple(gr.skip() for _ in range(5))


async def wait_for_pause(request: gr.Request) -> int | dict[str, Any]:
    """A new ticket if no keystroke of this session came after ours within ``DEBOUNCE_S``; otherwise no change."""
    session = session_of(request)
    ticket = TICKETS.issue(session)
    await asyncio.sleep(DEBOUNCE_S)
    return ticket if TICKETS.is_latest(session, ticket) else gr.skip()


def slider(name: str, value: float) -> gr.Slider:
    knob = KNOBS[name]
    return gr.Slider(knob.low, knob.high, value=value, step=knob.step, label=knob.label, info=knob.info)


def inputs_column() -> list[gr.components.Component]:
    """The photo, the two prompts and the advanced settings, in the ``/edit`` endpoint's order."""
    photo = gr.Image(
        label="Photo", type="filepath", image_mode=None, sources=["upload", "clipboard"], height=360, elem_id="photo"
    )
    source = gr.Textbox(label="Source prompt", placeholder="what the photo shows: a cat on a sofa", elem_id="source")
    target = gr.Textbox(
        label="Target prompt", placeholder="what it should become: a tiger on a sofa", elem_id="target"
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
    return [photo, source, target, method, steps, guidance, iterations, prior_weight, seed, strength, edit_guidance]


def outputs_column() -> list[gr.components.Component]:
    """The edit, the reconstruction beside it, and what happened."""
    with gr.Row():
        edited = gr.Image(
            label="Edited",
            type="pil",
            format="png",
            interactive=False,
            buttons=["download", "fullscreen"],
            elem_id="edited",
        )
        reconstruction = gr.Image(
            label="Reconstruction (source prompt)",
            type="pil",
            format="png",
            interactive=False,
            buttons=["download", "fullscreen"],
            elem_id="reconstruction",
        )
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
    return [edited, reconstruction, summary, plot, details]


def build_demo(banner: str = "") -> gr.Blocks:
    """The editor's page and events."""
    with gr.Blocks(title="rnri editor", analytics_enabled=False, delete_cache=(1800, 3600)) as demo:
        gr.HTML(banner, visible=bool(banner))
        gr.Markdown(
            "# rnri: real-time photo editing\nInverts your photo on a Latent Consistency Model with Regularized "
            f"Newton-Raphson Inversion, then regenerates it under the new prompt. Model: `{RESIDENT.model}` on "
            f"`{RESIDENT.pipe.device}`. Change only the target prompt and the edit updates as you type."
        )
        with gr.Row():
            with gr.Column(scale=2):
                inputs = inputs_column()
                button = gr.Button("Edit", variant="primary", elem_id="edit-button")
            with gr.Column(scale=3):
                outputs = outputs_column()
        examples = gr.Examples(EXAMPLES, inputs=inputs[:3], label="Examples (run when clicked)")
        # preprocess=False: the photo reaches load_photo unopened (Gradio's own Pillow call would fail on a
        # non-image with a bare "Error"), and every value is checked by the handler itself.
        gpu = dict(inputs=inputs, outputs=outputs, preprocess=False, concurrency_limit=1, concurrency_id="gpu")
        gr.on([button.click, inputs[1].submit, inputs[2].submit], edit, api_name="edit", **gpu)
        examples.load_input_event.then(edit, api_visibility="private", **gpu)
        ticket = gr.State()
        hidden = dict(show_progress="hidden", api_visibility="private")
        inputs[2].input(wait_for_pause, None, ticket, trigger_mode="multiple", concurrency_limit=None, **hidden)
        ticket.change(live_edit, trigger_mode="always_last", **gpu, **hidden)
    return demo.queue(max_size=QUEUE_SIZE, default_concurrency_limit=1)


def launch(host: str = DEFAULT_HOST, port: int | None = None, **options: Any) -> Any:
    """Serve the editor: no share link, bounded uploads; ``options`` go to ``gr.Blocks.launch``."""
    return demo.launch(server_name=host, server_port=port, share=False, max_file_size=MAX_FILE_SIZE, **options)


ARGS = parse_args(sys.argv[1:] if __name__ == "__main__" else [])
RESIDENT = load_resident(ARGS.model)
demo = build_demo(RESIDENT.banner)

if __name__ == "__main__":
    launch(ARGS.host, ARGS.port)
