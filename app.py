"""rnri's real-time editor: upload a photo, say what it shows and what it should become, and get the edit.

Gradio glue over the editor service (``rnri.editor``), which does the work: checked uploads, the inversion cached per
session (a new target prompt, edit guidance or painted mask costs one pass of the chain), reports. The controls are
made from the settings' one description (``rnri.options``). Run ``python app.py --help``; docs/app.md has the rest.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import html
import inspect
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd
from fastapi import HTTPException
from gradio.components.base import server
from gradio.components.image_editor import AcceptBlobs, EditorData
from gradio_client import Client
from PIL import Image
from starlette.middleware import Middleware

import rnri
import rnri.editor as ed

log = logging.getLogger("rnri.app")
ASSETS = Path(__file__).parent / "assets"
EXAMPLES = [
    [str(ASSETS / "cat.jpg"), "a photo of a cat", "a photo of a tiger"],
    [str(ASSETS / "astronaut.jpg"), "a photo of an astronaut", "a marble statue of an astronaut"],
    [str(ASSETS / "coffee.jpg"), "a cup of coffee on a table", "a cup of tea on a table"],
    [str(ASSETS / "rocket.jpg"), "a rocket launching", "a rocket launching at night"],
]
SHAPES_EXAMPLES = [  # the tiny model draws shapes (rnri/shapes): its own examples, renders of that world
    [
        str(ASSETS / "shapes-red-circle.png"),
        "a large red circle on a blue background",
        "a large pink heart on a blue background",
    ],
    [
        str(ASSETS / "shapes-heart-stripes.png"),
        "a large pink heart on a striped background",
        "a large pink heart on a green background",
    ],
    [
        str(ASSETS / "shapes-star-and-square.png"),
        "a small yellow star and a large green square on a gray background",
        "a small yellow heart and a large green square on a gray background",
    ],
]
HOST = "127.0.0.1"  # this machine only; --host 0.0.0.0 (or GRADIO_SERVER_NAME) serves a network
MAX_FILE_SIZE = "30mb"  # uploads above this are refused by the server before anything is decoded
MAX_BODY_BYTES = 31 * 2**20  # any request body: one such file and its form fields
MAX_EDITOR_PIXELS = 4 * 1024**2  # a canvas the page sends back: the photo shown there has sides of at most 1024
QUEUE_SIZE = 16  # waiting requests beyond this are turned away ("queue full") instead of piling up
SESSIONS = 256  # sessions whose state Gradio keeps (a painted mask of up to 4 MB, the inputs), the oldest dropped
DELETE_CACHE = (300, 1800)  # every 5 minutes, Gradio's files unused for 30 (uploads, served images) are deleted
DEBOUNCE_S = 0.4  # live edits wait for this long a pause in typing
LOCAL = ("auto_mask", "dilation", "feather", "paste_back")  # controls in the Local edit accordion; the rest: Advanced
OUTPUTS = ("edited", "reconstruction", "summary", "residuals", "details", "overlay")  # what /edit returns, in order
RESIDUALS = ("step", "residual", "iterate")
WELCOME = "Upload a photo, describe it, say what it should become, and press **Edit**."
WELCOME_PHOTO = "Upload a photo (or paste one); to change only part of it, paint there under **Local edit**."
HINT = "nothing painted: the edit acts on all of it (paint under **Local edit** to confine it)."
PENDING = "Editing the example…"
REFUSED = "**Not edited.**"  # how the summary of a refused edit begins
SUGGESTED = "Suggested from the photo: edit it to say what the photo shows"  # the source prompt's line, filled in
KEEP_TYPED = "(suggested, typed) => (typed && typed.trim()) || !suggested ? typed : suggested"  # in the page, at once
READY = "Ready: press **Edit**, or type the target prompt: the edit follows it as you type."
NOTHING_TO_PAINT = "Upload a photo above: it appears here, to paint where the edit may act."
PHONE = "(max-width: 1023px)"  # narrower, the columns stack: the result right under Edit, the settings after it
# The results stay in view: beside the settings on a desktop (a sticky column, short enough for a laptop's window with
# the solver's detail folded away; the page's container clips instead of hiding overflow, which would stop anything
# sticking), right under Edit on a phone. Results smaller than their box are scaled up pixel for pixel (the page
# script marks them ``upscaled``; the file downloaded stays the real size), under their label and buttons, not beneath.
CSS = f"""
.gradio-container {{ overflow: clip !important; }}
#page-script {{ display: none; }}
@media (min-width: 1024px) {{
  #results {{ position: sticky; top: 8px; align-self: flex-start; }}
}}
@media {PHONE} {{
  #main {{ flex-direction: column; }}
  #inputs-column {{ display: contents; }}
  #inputs {{ order: 1; }}
  #results {{ order: 2; }}
  #examples {{ order: 3; }}
  #settings {{ order: 4; }}
  #images {{ flex-wrap: nowrap; }}
  #images > .block {{ min-width: 0 !important; height: 220px !important; }}
  #results #reconstruction .image-container {{ padding-top: 4.4rem; }}  /* its label wraps to three lines there */
  #mask-and-summary {{ flex-direction: column; }}
  #mask-and-summary > * {{ flex: none; }}
  #summary {{ order: -1; }}
}}
#results {{ min-width: 0; max-width: 100%; }}
#results .image-container {{ padding-top: 2.4rem; }}
#results label[data-testid="block-label"] {{ max-width: calc(100% - 4.5rem); }}
#details-accordion {{ overflow-x: auto; }}
#results .image-frame img.upscaled {{
  width: 100%; height: 100%; max-width: none; object-fit: contain; image-rendering: pixelated;
}}
#painter .empty.wrap div {{ display: none; }}
#painter .empty.wrap::after {{ content: {json.dumps(NOTHING_TO_PAINT)}; }}
#examples table {{ table-layout: fixed; width: 100%; }}
#examples td, #examples th {{ white-space: normal; overflow-wrap: anywhere; }}
"""
# Marks each result image that is smaller than its box both ways (CSS scales those up, pixel for pixel).
PAGE_SCRIPT = """
document.addEventListener('load', (event) => {
  const img = event.target;
  if (!(img instanceof HTMLImageElement) || !img.closest('#results .image-frame')) return;
  const box = img.closest('.image-container');
  img.classList.toggle('upscaled', img.naturalWidth < box.clientWidth && img.naturalHeight < box.clientHeight);
}, true);
"""
# After an example is clicked: the result cleared (in the page, before the server answers) and brought into view.
SHOW_RESULT = """
const edited = document.querySelector('#edited');
const box = edited && edited.getBoundingClientRect();
if (box && (box.top < 0 || box.bottom > window.innerHeight)) edited.scrollIntoView({block: 'start'});
"""
HISTORY = 12  # edits a session's history keeps (the oldest dropped); Gradio keeps the state of SESSIONS sessions
NEXT = "The edit is now the photo, inverted again: type what it should become next."
# On a phone, Edit (and Edit this result) scroll Edit to the window's top when the slider under the result would not
# show whole: the result, and the slider under it, then come in view under the button.
SHOW_EDIT = f"""() => {{
  const slider = document.querySelector('#before-after'), button = document.querySelector('#edit-button');
  if (!slider || !button || !window.matchMedia('{PHONE}').matches) return;
  const box = slider.getBoundingClientRect();
  if (box.top < 0 || box.bottom > window.innerHeight) button.scrollIntoView({{block: 'start', behavior: 'instant'}});
}}"""
HIDDEN = dict(show_progress="hidden", api_visibility="private")  # events of the page's own, with no spinner
BRUSH = gr.Brush(colors=[("#ff00c8", 0.5)], color_mode="fixed", default_size=24)  # translucent: the photo shows
ERASER = gr.Eraser(default_size=24)


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Command-line options; each defaults to its environment variable."""
    env = os.environ.get
    p = argparse.ArgumentParser(description="rnri real-time photo editor (Gradio)")
    p.add_argument(
        "--model",
        default=env("RNRI_MODEL", rnri.DEFAULT_MODEL),
        help="Hub id or folder of an LCM, Stable Diffusion (1.5, 2.x, XL), Turbo or FLUX.1 model, or 'tiny' "
        "(%(default)s)",
    )
    p.add_argument("--lora", default=env("RNRI_LORA"), help="an LCM-LoRA (Hub id or folder) fused into --model")
    p.add_argument("--host", default=env("GRADIO_SERVER_NAME", HOST), help="address to bind (%(default)s)")
    p.add_argument("--port", type=int, default=env("GRADIO_SERVER_PORT", "7860"), help="port (%(default)s)")
    p.add_argument("--offload", choices=ed.OFFLOAD_CHOICES, default=env("RNRI_OFFLOAD", "auto"), help="CPU offload")
    p.add_argument("--channels-last", action="store_true", default=env("RNRI_CHANNELS_LAST", "") in ("1", "true"))
    p.add_argument(
        "--compile", action="store_true", default=env("RNRI_COMPILE", "") in ("1", "true"),
        help="torch.compile the UNet and warm it up at start, before the first visitor (RNRI_COMPILE=1); GPU servers",
    )  # fmt: skip
    p.add_argument("--auth", default=env("RNRI_AUTH"), help="user:password asked of every visitor (RNRI_AUTH)")
    p.add_argument(
        "--allowed-origins", default=env("RNRI_ALLOWED_ORIGINS", ""),
        help="comma-separated origins (https://example.org) of other sites whose pages may call this server",
    )  # fmt: skip
    p.add_argument(
        "--mcp", action="store_true", default=env("RNRI_MCP", env("GRADIO_MCP_SERVER", "")).lower() in ("1", "true"),
        help="also serve the editor as an MCP tool at /gradio_api/mcp/ (RNRI_MCP=1); off by default",
    )  # fmt: skip
    p.add_argument("--log-level", choices=ed.LEVELS, default=env("RNRI_LOG_LEVEL", "warning"), help="%(default)s")
    ed.share_cpu_politely()  # the caption's flag is described beside its model, whose module imports torch
    ed.add_arguments(p, ed.settings_of(ed.CaptionOptions), {"captioner": env("RNRI_CAPTIONER", "auto")})
    p.set_defaults(captioner=env("RNRI_CAPTIONER", "auto"))
    return p.parse_args(argv)


@contextmanager
def user_errors() -> Iterator[None]:
    """Every failure as a ``gr.Error`` whose message the user (or API client) sees; the app keeps serving."""
    try:
        yield
    except Exception as error:
        raise gr.Error(message_of(error), print_exception=False) from error


def message_of(error: Exception) -> str:
    """What to tell the user about ``error``: their input's fault in its own words, else what failed."""
    if isinstance(error, rnri.InversionError):
        return f"The inversion failed: {error}. Try the 'ddim' method or a larger prior weight."
    if isinstance(error, ValueError | TypeError):  # ed.InputError above all: the user's to fix
        return str(error)
    log.exception("edit failed")
    return f"The edit failed ({type(error).__name__}: {error}). Your inputs are kept."


def prompts_of(source: Any, target: Any) -> tuple[str, str]:
    """The two prompts, checked (``ed.InputError`` saying which is wrong); the source prompt may be empty."""
    source = ed.clean_prompt(source, "source prompt (what the photo shows)", required=False)
    return source, ed.clean_prompt(target, "target prompt (what the photo should become)")


def file_of(value: Any, what: str) -> str | None:
    """The file a client sent (a FileData dict), if it is one in this run's folder (``ed.sent_file``), or None. A
    string is the server's own (Gradio's preprocessing, an example): a client's is refused by the component's data
    model before any handler runs."""
    return value if value is None or isinstance(value, str) else ed.sent_file(value, what)


def shown(result: ed.EditResult | None, limits: str | None = None) -> tuple:
    """An edit as the outputs show it, in ``OUTPUTS`` order; nothing (None) as a cleared page. ``limits``: what the
    model cannot draw (``ed.model_limits``), for the summary's words."""
    report = result.report if result else None
    values = {
        "edited": result.image if result else None,
        "reconstruction": result.reconstruction if result else None,
        "summary": report.summary(limits) if report else WELCOME,
        "residuals": pd.DataFrame(report.residual_rows() if report else [], columns=RESIDUALS),
        "details": report.details if report else None,
        "overlay": result.overlay if result else None,
    }
    return tuple(values[name] for name in OUTPUTS)


def refused(message: str) -> tuple:
    """A refused edit as one consistent page: no images, the summary saying why (and a toast)."""
    gr.Warning(message)
    return tuple(f"{REFUSED} {message}" if name == "summary" else value for name, value in zip(OUTPUTS, shown(None)))


class Handlers:
    """The page's events over one editor service; they keep no state but the debouncing tickets."""

    def __init__(
        self, editor: ed.Editor, listeners: ed.Listeners | None = None, captioning: ed.Captioning | None = None
    ) -> None:
        self.editor, self.tickets, self.listeners = editor, ed.LatestRequest(), listeners or ed.Listeners()
        self.captioning = captioning or ed.Captioning(None, "none")

    def suggest_caption(self, photo: Any, source: Any) -> dict[str, Any] | Any:
        """A new photo's suggested source prompt, when the field is empty (a person's own words are never
        replaced), said so under the field; where there is no suggestion, the short note why; else no change."""
        if photo is None or (isinstance(source, str) and source.strip()):
            return gr.skip()
        try:
            loaded = ed.load_photo(file_of(photo, "photo"))
        except ed.InputError:
            return gr.skip()  # show_photo says why under the photo
        suggestion = self.captioning.suggest(loaded, source if isinstance(source, str) else "")
        if suggestion.text:
            return gr.update(value=suggestion.text, info=f"{SUGGESTED} ({self.captioning.name})")
        return gr.update(info=suggestion.note) if suggestion.note else gr.skip()

    def caption_event(self, photo: Any, source: Any) -> tuple[str, dict[str, Any] | Any]:
        """``suggest_caption`` for the page: the suggestion ("" for none) and the line under the field; the page puts
        the suggestion in the field only if it is still empty then (``KEEP_TYPED``), so words typed while the
        caption was being written are kept too."""
        update = self.suggest_caption(photo, source)
        if not isinstance(update, dict):
            return "", gr.skip()
        return update.get("value") or "", gr.update(info=update["info"]) if update.get("info") else gr.skip()

    def gone(self, request: gr.Request | None) -> bool:
        """Whether the client of ``request`` queued it and went away (never opened its stream, or closed it):
        nobody would see the edit, so it is not made and the next client's turn comes at once."""
        session = request.session_hash if request else None
        if session and not self.listeners.present(session):
            log.info("dropped a job of session %s: its client is gone", session)
            return True
        return False

    def request(self, photo: Any, painted: Any, source: Any, target: Any, session: str, values: dict):
        """An edit request from raw inputs, every one checked; ``painted``: a region, or a mask file."""
        loaded = ed.load_photo(file_of(photo, "photo") if photo is not None else None)
        if painted is None or isinstance(painted, str | dict):  # a mask file (API clients)
            painted = ed.read_region([file_of(painted, "mask")] if painted else [], loaded.image.size)
        elif painted.shape[-2:] != loaded.image.size[::-1]:
            painted = None  # painted over another photo: the page has cleared it
        source, target = prompts_of(source, target)
        choices = ed.read_form(values, self.editor.pipe)
        steering = ed.read_steering(values, self.editor.pipe, choices.edit_guidance, values.get("concepts"))
        return ed.EditRequest(loaded, painted, source, target, choices, session, steering)

    def api_edit(self, photo, source, target, mask=None, request: gr.Request = None, progress=gr.Progress(), **values):  # noqa: B008
        """Edit a photo by describing it and saying what it should become: rnri inverts it under the source prompt
        and regenerates it under the target prompt; a mask confines the edit. The settings below are optional.

        Args:
            photo: The photo to edit (JPEG, PNG, WebP, GIF, BMP or TIFF; up to 30 MB and 24 megapixels).
            source: Source prompt: what the photo shows, e.g. "a photo of a cat".
            target: Target prompt: what the photo should become, e.g. "a photo of a tiger".
            mask: Optional mask of the photo's aspect ratio, white where the edit may act (none: the whole photo).

        Returns:
            The edited photo, the reconstruction under the source prompt, a summary in Markdown, the solver's
            residual per step, the details as JSON and the photo tinted where the edit acted."""
        if self.gone(request):
            return tuple(gr.skip() for _ in OUTPUTS)
        with user_errors():
            session = request.session_hash if request else "api"
            result = self.editor.edit(
                self.request(photo, mask, source, target, session, values), progress_of(progress)
            )
        return shown(result, self.limits)

    def page_edit(self, photo, painted, source, target, request: gr.Request, progress=gr.Progress(), **values):  # noqa: B008
        """The page's Edit: as ``api_edit``, but a refused edit is shown on the page, not raised."""
        if self.gone(request):
            return tuple(gr.skip() for _ in OUTPUTS)
        try:
            edit = self.request(photo, painted, source, target, request.session_hash or "", values)
            result = self.editor.edit(edit, progress_of(progress))
        except Exception as error:
            self.editor.forget(request.session_hash or "")  # the page shows no edit now: the next one is made
            return refused(message_of(error))
        for notice in [] if result.report.details["inversion_cached"] else result.report.details["notices"]:
            gr.Warning(notice)
        return shown(result, self.limits)

    def live_edit(self, photo, painted, source, target, request: gr.Request, **values) -> tuple:
        """Edit as the target prompt is typed or the mask painted: from the cached inversion, or inverting first when
        there is none (before a first Edit, after a refused one); nothing while the input is incomplete."""
        if self.gone(request):
            return tuple(gr.skip() for _ in OUTPUTS)
        try:
            edit = self.request(photo, painted, source, target, request.session_hash or "", values)
            result = self.editor.re_edit(edit, invert=True)
        except Exception:  # half-typed input is normal here; Edit reports errors, and `recheck` a stale refusal
            result = None
        return shown(result, self.limits) if result else tuple(gr.skip() for _ in OUTPUTS)

    @property
    def limits(self) -> str | None:
        """What the model draws when that is not photos ("only draws ..."), for the summary; None otherwise."""
        limits = ed.model_limits(self.editor.model)
        return limits.draws if limits else None

    async def wait_for_pause(self, request: gr.Request) -> int | dict[str, Any]:
        """A new ticket if nothing of this session came after ours within ``DEBOUNCE_S``; otherwise no change."""
        ticket = self.tickets.issue(request.session_hash or "")
        await asyncio.sleep(DEBOUNCE_S)
        return ticket if self.tickets.is_latest(request.session_hash or "", ticket) else gr.skip()

    def paint_auto_mask(self, photo, painted, source, target, request: gr.Request, **values) -> tuple:
        """The photo with the automatic mask as its painted layer, to correct with brush and eraser; the region it
        paints and the line saying so (set here: the image editor does not always report a value set from here)."""
        with user_errors():
            edit = self.request(photo, None, source, target, request.session_hash or "", values)
            size = edit.photo.image.size
            layer = ed.brush_layer(self.editor.mask_of(edit), size)
            region = ed.painted_region([layer], size)
        return {"background": edit.photo.image, "layers": [layer], "composite": None}, region, photo_line(size, region)

    def edit_example(self, photo: str, source: str, target: str, request: gr.Request) -> tuple:
        """An example's edit (Gradio caches these lazily on a Space)."""
        return self.page_edit(photo, None, source, target, request)


def show_photo(photo: Any) -> tuple[Any, Any, None, str | Any]:
    """A new photo: checked, shown for painting (upright, downscaled as it is edited), nothing painted yet; one that
    cannot be edited is taken out of the Photo box (no broken image stays there), the line under it saying why."""
    if photo is None:
        return gr.skip(), None, None, gr.skip()  # cleared by the user (``photo.clear`` says so) or after a refusal
    try:
        loaded = ed.load_photo(file_of(photo, "photo"))
    except ed.InputError as error:
        return None, None, None, f"⚠️ {error}"
    return (
        gr.skip(),
        {"background": loaded.image, "layers": [], "composite": None},
        None,
        photo_line(loaded.image.size, None),
    )


def recheck(photo: Any, source: Any, target: Any, summary: Any) -> str | Any:
    """A refusal the summary shows, said again for the inputs as they are now: once its cause is fixed it makes way
    for the ready line, so no stale "Not edited" stays beside a filled-in prompt (the photo is read by
    ``show_photo``; here only whether there is one)."""
    if not (isinstance(summary, str) and summary.startswith(REFUSED)):
        return gr.skip()
    try:
        if photo is None:
            ed.load_photo(None)  # says to upload one
        prompts_of(source, target)
    except ed.InputError as error:
        return f"{REFUSED} {error}"
    return READY


def read_mask(value: dict[str, Any] | None) -> tuple[Any, str | Any]:
    """Where the image editor's layers mark its photo ((1, 1, H, W), None: nowhere) and a line saying so; no
    change when the page named an upload whose files never came (Gradio's editor sometimes does)."""
    if not value or not value.get("background"):
        return (gr.skip(), gr.skip()) if value else (None, gr.skip())
    with user_errors():
        size = ed.image_size(value["background"])
        painted = ed.read_region(value.get("layers") or [], size, MAX_EDITOR_PIXELS)
    return painted, photo_line(size, painted)


def photo_line(size: tuple[int, int], painted: Any) -> str:
    """The line under the photo: its size and where the edit acts."""
    where = HINT if painted is None else f"painted: {float(painted.mean()):.0%} of it, where the edit acts."
    return f"Photo {size[0]}x{size[1]}, {where}"


def clear_mask(photo: Any) -> tuple:
    """The photo to paint on without the painted layers, nothing painted, and the line saying so."""
    return show_photo(photo)[1:] if photo is not None else (gr.skip(), gr.skip(), gr.skip())


def served_image(value: Any, what: str) -> Image.Image | None:
    """An image the page names (a result it was served, a photo uploaded), read from this run's folder only."""
    if value is None:
        return None
    with Image.open(file_of(value, what)) as image:
        return image.convert("RGB")


def before_after(photo: Any, edited: Any) -> tuple[Image.Image, Image.Image] | None:
    """The photo as it was edited (upright, downscaled as the edit) and its edit, for the before/after slider."""
    try:
        after = served_image(edited, "edited image")
        before = ed.load_photo(file_of(photo, "photo")).image if photo is not None else None
    except (ed.InputError, OSError):
        return None
    if after is None or before is None or before.size != after.size:
        return None  # an edit of another photo, or a page half cleared: nothing to compare
    return before, after


def edit_this_result(edited: Any, target: Any) -> tuple:
    """The edit as the new photo, its target prompt as the new source prompt (what the photo shows now); the page
    inverts it at once (``page_edit`` follows)."""
    with user_errors():
        if edited is None:
            raise ed.InputError("There is no edit to keep editing yet: press Edit first.")
        after = file_of(edited, "edited image")  # the PNG as served: a PIL image would be saved again as WebP
        ed.load_photo(after)  # an image the editor can read
    return after, target, NEXT


def remember(history: list | None, photo: Any, edited: Any, source: Any, target: Any, **values) -> tuple:
    """The session's history with this edit first (photo, prompts, settings; at most ``HISTORY``), and the gallery
    of it: each edit with its prompts."""
    if photo is None or edited is None:  # a refused edit: nothing to keep
        return gr.skip(), gr.skip()
    try:
        entry = dict(photo=file_of(photo, "photo"), edited=file_of(edited, "edited image"), source=source,
                     target=target, values=values)  # fmt: skip
    except ed.InputError:
        return gr.skip(), gr.skip()
    kept = [entry, *[e for e in history or [] if e["edited"] != entry["edited"]]][:HISTORY]
    return kept, gallery_of(kept)


def gallery_of(history: list) -> list[tuple[str, str]]:
    return [(e["edited"], f"{e['source'] or '(no source prompt)'} → {e['target']}") for e in history]


def restore(history: list | None, names: list[str], selected: Any) -> tuple:
    """An edit of the history back in the page: its photo, prompts and settings (``names``: the controls' order)."""
    entries = history or []
    if not (0 <= selected.index < len(entries)):
        return tuple(gr.skip() for _ in range(3 + len(names)))
    entry = entries[selected.index]
    values = [entry["values"].get(name, gr.skip()) for name in names]
    return (entry["photo"], entry["source"], entry["target"], *values)


def progress_of(progress: gr.Progress):
    return lambda done, total: progress((done, total), desc="Inverting", unit="steps")


def widget(name: str, setting: Any, fixed: str | None = None) -> gr.components.Component:
    """The control of one setting, as its description says: a checkbox, a choice, a slider or a number box; with
    ``fixed`` (why the model does not use it), shown at its default and not editable."""
    opt, common = setting.option, dict(label=setting.option.label, info=fixed or setting.option.help, elem_id=name)
    common |= {"interactive": False} if fixed else {}
    if setting.kind is bool:
        return gr.Checkbox(setting.default, **common)
    if setting.kind is str and not opt.choices:
        return gr.Textbox(setting.default, max_lines=2, **common)
    if opt.choices:
        return gr.Radio(list(opt.choices), value=setting.default, **common)
    if opt.high - opt.low > 1000:
        return gr.Number(setting.default, precision=0, minimum=opt.low, maximum=opt.high, **common)
    return gr.Slider(opt.low, opt.high, value=setting.default, step=opt.step, **common)


def solver_controls(method: str) -> list[dict[str, Any]]:
    """The method's own options shown under their labels and defaults for it; hidden where it has none."""
    offered = ed.solver_settings(method)

    def update(name: str) -> dict[str, Any]:
        if name not in offered:
            return gr.update(visible=False)
        s = offered[name]
        return gr.update(
            visible=True, label=s.option.label, info=s.option.help, value=s.default, maximum=s.option.high
        )

    return [update(name) for name in ("iterations", "prior_weight")]


def banner(resident: ed.Resident) -> str:
    """The line atop the page whenever the model running cannot draw photos (the tiny shapes model): what it draws,
    and why it runs (the model asked for could not be loaded) or how to run one that draws photos."""
    limits = ed.model_limits(resident.model)
    if limits is None and resident.failure is None:
        return ""
    model = f"<code>{html.escape(resident.model)}</code>"
    what = f"Running on the {model} model: " + (
        html.escape(f"it {limits.draws}; {limits.otherwise}.") if limits else "it is not the model asked for."
    )
    why = (
        f"The app {html.escape(resident.failure)}."
        if resident.failure
        else "Try its examples below; for your own photos start the editor on a model of photos "
        "(<code>python app.py</code>, or <code>--model</code> with a Hub id or a folder)."
    )
    return (
        "<div role='alert' id='model-banner' style='border:2px solid #d97706;background:#fffbeb;color:#451a03;"
        f"padding:10px 14px;border-radius:8px'><b>{what}</b> {why}</div>"
    )


def build_demo(handlers: Handlers, resident: ed.Resident) -> gr.Blocks:
    """The editor's page and events: the inputs and Edit, the examples, the settings, and the results beside them
    (under Edit on a phone); each part in a column of its own (``elem_id``), so a new one has a place to go."""
    with gr.Blocks(title="rnri editor", analytics_enabled=False, delete_cache=DELETE_CACHE) as demo:
        gr.HTML("", js_on_load=PAGE_SCRIPT, elem_id="page-script", padding=False)
        notice = banner(resident)
        gr.HTML(notice, visible=bool(notice), padding=False)
        gr.Markdown(
            "# rnri: real-time photo editing\nInverts your photo (by default DDIM inversion with noise correction, "
            "the best measured; the Newton-Raphson methods are under Advanced), then "
            f"regenerates it under the new prompt. Model: `{resident.model}` ({rnri.backbone_of(resident.pipe).name} "
            f"backbone) on `{resident.pipe.device}`. Change the target prompt or paint a mask and the edit updates at "
            "once."
        )
        with gr.Row(elem_id="main"):
            with gr.Column(scale=2, elem_id="inputs-column"):
                with gr.Column(elem_id="inputs"):
                    photo, hint, source, target, button = inputs_column(handlers.captioning.note)
                examples_place = gr.Column(elem_id="examples")
                with gr.Column(elem_id="settings"):
                    painter, controls = controls_of(resident)
            with gr.Column(scale=3, elem_id="results"):
                outputs, extras = outputs_column()
        cancels = events(handlers, photo, painter, hint, source, target, button, controls, outputs)
        history_events(handlers, photo, source, target, button, controls, outputs, extras, cancels)
        with examples_place:
            examples(handlers, photo, source, target, outputs, cancels)
    demo.rnri_listeners = handlers.listeners  # the web guard counts their streams (launch)
    return demo.queue(max_size=QUEUE_SIZE, default_concurrency_limit=1)


def inputs_column(caption_note: str | None = None) -> tuple:
    """The photo, the line under it, the two prompts and Edit (above the settings: in view); ``caption_note``: why
    no source prompt is suggested (the captioner could not be loaded), under that field."""
    photo = gr.Image(label="Photo", type="filepath", sources=["upload", "clipboard"], height=280, elem_id="photo")
    hint = gr.Markdown(WELCOME_PHOTO, elem_id="photo-hint")
    source = gr.Textbox(
        label="Source prompt", placeholder="what the photo shows: a cat", info=caption_note, elem_id="source"
    )
    target = gr.Textbox(label="Target prompt", placeholder="what it should become: a tiger", elem_id="target")
    return photo, hint, source, target, gr.Button("Edit", variant="primary", elem_id="edit-button")


class PainterGuard:
    """Bounds on what a request can make the image editor hold (Gradio 6.31 has none), installed on the instance
    (a subclass of a Gradio component would make Gradio write an ``app.pyi`` beside this file at every start).

    Its ``accept_blobs`` route stores a stroke's uploads until the change event reads them: as sent, an ``index``
    of 10**9 grows a list of 10**9 entries (8 GB) and ids never read pile up. Here a blob must be an image of at
    most ``MAX_EDITOR_PIXELS`` (checked from its header), a layer index under ``ed.MAX_LAYERS``, and at most
    ``MAX_PENDING`` strokes (``MAX_PENDING_BYTES`` in all) wait to be read, the oldest dropped first. A value
    naming files instead is checked the same way before Gradio decodes them.
    """

    MAX_PENDING, MAX_PENDING_BYTES = 32, 128 * 2**20

    def __init__(self, painter: gr.ImageEditor) -> None:
        self.painter, self.accept, self.decode = painter, painter.accept_blobs, painter.preprocess

        def accept_blobs(data: AcceptBlobs):  # a function: the route asks it to be marked as a server function
            return self.accept_blobs(data)

        painter.accept_blobs, painter.preprocess = server(accept_blobs), self.preprocess

    def accept_blobs(self, data: AcceptBlobs):
        kind, index, ident = data.data.get("type"), data.data.get("index"), data.data.get("id")
        if kind not in ("background", "layer", "composite") or not isinstance(ident, str) or len(ident) > 64:
            raise HTTPException(400, "Not a blob of the image editor.")
        if kind == "layer" and not (str(index).isdigit() and int(index) < ed.MAX_LAYERS):
            raise HTTPException(400, f"A layer index must be under {ed.MAX_LAYERS}.")
        if len(data.files) != 1:
            raise HTTPException(400, "Send one image per blob.")
        try:
            ed.image_size(data.files[0][1], "painted layer", MAX_EDITOR_PIXELS)
        except ed.InputError as error:
            raise HTTPException(400, str(error)) from None
        self.accept(data)
        self.bound_pending()

    def bound_pending(self) -> None:
        """Drop the oldest strokes waiting to be read beyond ``MAX_PENDING`` of them or ``MAX_PENDING_BYTES``."""
        pending = self.painter.blob_storage

        def size(blobs) -> int:
            return sum(len(b or b"") for b in (blobs.background, blobs.composite, *blobs.layers))

        while len(pending) > self.MAX_PENDING or (
            len(pending) > 1 and sum(map(size, pending.values())) > self.MAX_PENDING_BYTES
        ):
            pending.pop(next(iter(pending)))

    def preprocess(self, payload: EditorData | None):
        if payload is not None and payload.id is None:  # files named by path: not yet checked
            if len(payload.layers) > ed.MAX_LAYERS:
                raise gr.Error(f"{len(payload.layers)} painted layers were sent; at most {ed.MAX_LAYERS} are read.")
            for file in (payload.background, payload.composite, *payload.layers):
                with user_errors():
                    if file is not None:
                        ed.image_size(file.path, "painted layer", MAX_EDITOR_PIXELS)
        return self.decode(payload)


def controls_of(resident: ed.Resident) -> tuple[gr.ImageEditor, dict[str, gr.components.Component]]:
    """The brush over the photo and the settings' controls in their accordions, by the ``/edit`` parameter names in
    the order offered (and the two mask buttons)."""
    offered, fixed, made = ed.controls(resident.pipe), ed.not_applicable(resident.pipe), {}
    # Open: Gradio's image editor drops the first change it reports; mounted from the start that is the photo
    # arriving, whereas mounted later (a closed accordion opened) it was the user's first stroke, lost.
    with gr.Accordion("Local edit: paint where the photo may change", open=True, elem_id="local-edit"):
        painter = gr.ImageEditor(
            label="Where to edit", show_label=False, type="filepath", sources=(), brush=BRUSH, eraser=ERASER,
            layers=False, transforms=(), format="png", height=360, elem_id="painter",
        )  # fmt: skip
        PainterGuard(painter)
        with gr.Row():
            made["clear"] = gr.Button("Clear mask", size="sm", elem_id="clear-mask")
            made["paint_auto"] = gr.Button("Paint over the automatic mask", size="sm", elem_id="paint-auto")
        made |= {name: widget(name, setting, fixed.get(name)) for name, setting in offered.items() if name in LOCAL}
    with gr.Accordion("Advanced", open=False, elem_id="advanced"):
        made |= {name: widget(name, s, fixed.get(name)) for name, s in offered.items() if name not in LOCAL}
        for name in set(ed.solver_settings("rnri")) - set(ed.solver_settings(offered["method"].default)):
            made[name].visible = False  # the default method does not take it; choosing one that does shows it
        steering, off = ed.steering_controls(), ed.steering_not_applicable(resident.pipe)
        made |= {name: widget(name, s, off.get(name)) for name, s in steering.items()}
        made["concepts"] = concepts_table(off.get("concepts"))
    return painter, {name: made[name] for name in ("clear", "paint_auto", *offered, *steering, "concepts")}


def concepts_table(fixed: str | None = None) -> gr.Dataframe:
    """The concept rows (LEdits++'s panel: text, strength, add or remove; up to ``ed.MAX_CONCEPTS``), their columns
    from the one description; with ``fixed`` (why the model has no place for them), shown read-only, saying so."""
    columns = ed.concept_columns()
    kinds = ["number" if s.kind in (int, float) else "str" for s in columns.values()]
    help = " ".join(f"{s.option.label}: {s.option.help}" for s in columns.values())
    label = f"Concepts (not available: {fixed})" if fixed else f"Concepts, one per row. {help}"
    return gr.Dataframe(
        [[s.default for s in columns.values()]], headers=[s.option.label for s in columns.values()], datatype=kinds,
        type="array", row_count=1, column_count=len(columns), static_columns=[], interactive=not fixed, label=label,
        elem_id="concepts",
    )  # fmt: skip


def events(handlers: Handlers, photo, painter, hint, source, target, button, controls, outputs) -> list:
    """What each control does: Edit, the API's /edit, live edits, a stale refusal taken back, the mask buttons; the
    events an example's click cancels."""
    clear, paint_auto = controls.pop("clear"), controls.pop("paint_auto")
    painted, ticket, mask_file = gr.State(), gr.State(), gr.Image(label="Mask file (white = edit)", visible=False)
    page = dict(inputs=[photo, painted, source, target], inputs_kwargs=controls, preprocess=False)
    gpu = dict(concurrency_limit=1, concurrency_id="gpu")
    triggers = [button.click, source.submit, target.submit]
    edit = gr.on(triggers, handlers.page_edit, outputs=outputs, **page, **gpu, api_visibility="private")
    api = dict(inputs=[photo, source, target], inputs_kwargs=controls | {"mask": mask_file}, preprocess=False)
    documented = with_settings(handlers.api_edit, controls)
    gr.on([], documented, outputs=outputs, **api, **gpu, api_name="edit")
    shown = photo.change(show_photo, photo, [photo, painter, painted, hint], preprocess=False, queue=False, **HIDDEN)
    photo.clear(lambda: WELCOME_PHOTO, None, hint, queue=False, **HIDDEN)
    caption = dict(concurrency_limit=1, concurrency_id="caption", preprocess=False, **HIDDEN)
    suggested = gr.Textbox(visible=False)
    # after the photo is shown: one request of the page's fewer at a time (the web guard caps a client's at 4)
    written = shown.then(handlers.caption_event, [photo, source], [suggested, source], **caption)
    written.success(None, [suggested, source], source, js=KEEP_TYPED, queue=False, **HIDDEN)
    summary = outputs[OUTPUTS.index("summary")]
    gr.on(
        [photo.change, source.change, target.change], recheck, [photo, source, target, summary], summary,
        preprocess=False, queue=False, **HIDDEN,
    )  # fmt: skip
    read = painter.change(read_mask, painter, [painted, hint], queue=False, **HIDDEN)
    mask_set = [painter, painted, hint]  # set with the painter: it does not always report a value set from here
    cleared = clear.click(clear_mask, photo, mask_set, preprocess=False, queue=False, **HIDDEN)
    auto = paint_auto.click(handlers.paint_auto_mask, outputs=mask_set, **page, **gpu, **HIDDEN)
    solver = [controls["iterations"], controls["prior_weight"]]
    controls["method"].change(solver_controls, controls["method"], solver, queue=False, **HIDDEN)
    live = [target.change, *(controls[n].input for n in ("auto_mask", "paste_back"))]  # change: pastes too
    live += [controls[n].release for n in ("dilation", "feather")]
    pause = dict(fn=handlers.wait_for_pause, inputs=None, outputs=ticket, concurrency_limit=None, **HIDDEN)
    gr.on(live, trigger_mode="multiple", **pause)
    for changed in (read, cleared, auto):  # a stroke, a cleared mask, the automatic one painted
        changed.success(**pause)
    re_edit = ticket.change(handlers.live_edit, outputs=outputs, **page, **gpu, trigger_mode="always_last", **HIDDEN)
    return [edit, re_edit]


def history_events(handlers: Handlers, photo, source, target, button, controls, outputs, extras, cancels) -> None:
    """The before/after slider following the edit shown, "Edit this result", and the session's history: each
    Edit's result added (``HISTORY`` at most), a click restoring its photo, prompts and settings."""
    edited, summary = outputs[OUTPUTS.index("edited")], outputs[OUTPUTS.index("summary")]
    slider, again, gallery, history = extras["slider"], extras["again"], extras["history"], gr.State([])
    edited.change(before_after, [photo, edited], slider, preprocess=False, queue=False, **HIDDEN)
    settings = {name: c for name, c in controls.items() if name not in ("clear", "paint_auto")}
    page = dict(inputs=[photo, gr.State(), source, target], inputs_kwargs=settings, preprocess=False)
    gpu = dict(concurrency_limit=1, concurrency_id="gpu")
    for pressed in (button, again):
        pressed.click(None, js=SHOW_EDIT, queue=False, **HIDDEN)
    kept = again.click(edit_this_result, [edited, target], [photo, source, summary], preprocess=False, **HIDDEN)
    inverted = kept.success(handlers.page_edit, outputs=outputs, **page, **gpu, api_visibility="private")
    record = dict(inputs=[history, photo, edited, source, target], inputs_kwargs=settings, preprocess=False)
    for edit in (cancels[0], inverted):  # Edit, and the inversion of a kept result
        edit.success(remember, outputs=[history, gallery], **record, **HIDDEN)
    names = list(settings)

    def restored(kept: list | None, selected: gr.SelectData) -> tuple:
        return restore(kept, names, selected)

    back = gallery.select(restored, [history], [photo, source, target, *settings.values()], queue=False, **HIDDEN)
    back.success(handlers.live_edit, outputs=outputs, **page, **gpu, **HIDDEN)  # its edit shown again


def with_settings(handler: Callable, controls: dict[str, gr.components.Component]) -> Callable:
    """``handler``, which takes the settings as ``**values``, with each setting in its signature and its Args
    section, from the settings' one description: Gradio's API page and the MCP tool read both."""
    offered = ed.controls(handler.__self__.editor.pipe) | ed.steering_controls()
    fixed = [p for p in inspect.signature(handler).parameters.values() if p.kind is not p.VAR_KEYWORD]
    default = lambda n: offered[n].default if n in offered else None  # noqa: E731  (concepts: none)
    named = [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=default(n)) for n in controls]
    lines = [f"    {name}: {ed.explain_option(offered[name])}" for name in controls if name in offered]
    if "concepts" in controls:
        columns, modes = ", ".join(ed.concept_columns()), " or ".join(ed.concept_columns()["mode"].option.choices)
        lines.append(
            f"    concepts: Optional concepts to bring in or take out, as rows [{columns}] (mode {modes}; at most "
            f"{ed.MAX_CONCEPTS}); where the model has no place for them (see attention_control) they are refused."
        )

    @functools.wraps(handler)
    def documented(*args, **kwargs):
        return handler(*args, **kwargs)

    documented.__name__ = "edit"  # the MCP tool's name
    documented.__signature__ = inspect.signature(handler).replace(parameters=fixed + named)
    head, _, returns = inspect.getdoc(handler).partition("\nReturns:")
    documented.__doc__ = head.rstrip() + "\n" + "\n".join(lines) + "\n\nReturns:" + returns
    return documented


def examples(handlers: Handlers, photo, source, target, outputs, cancels) -> None:
    """The examples: a click shows its photo and prompts, clears the result at once and runs the edit."""
    caching = ed.example_caching()  # lazily cached on a Space; locally run when clicked, through the session cache
    rows = SHAPES_EXAMPLES if handlers.editor.model == "tiny" else EXAMPLES
    found = gr.Examples(rows, [photo, source, target], outputs, handlers.edit_example, label="Examples", **caching)
    pending = [None if name != "summary" else PENDING for name in OUTPUTS]
    found.dataset.click(
        None, None, outputs, js=f"() => {{ {SHOW_RESULT} return {json.dumps(pending)}; }}", cancels=cancels
    )
    if not caching["cache_examples"]:
        found.load_input_event.then(
            handlers.edit_example, [photo, source, target], outputs, preprocess=False, concurrency_limit=1,
            concurrency_id="gpu", api_visibility="private",
        )  # fmt: skip


def outputs_column() -> tuple[list[gr.components.Component], dict[str, gr.components.Component]]:
    """The edit and the reconstruction beside it, the before/after slider and the mask used, what happened; folded
    away, the solver's residuals and the details. In ``OUTPUTS`` order; and the page's own: the slider, "Edit this
    result" and the session's history."""
    images = dict(type="pil", format="png", interactive=False, buttons=["download", "fullscreen"])
    with gr.Row(elem_id="images"):
        edited = gr.Image(label="Edited", elem_id="edited", height=280, **images)
        reconstruction = gr.Image(
            label="Reconstruction (source prompt)", elem_id="reconstruction", height=280, **images
        )
    with gr.Row(elem_id="compare"):
        slider = gr.ImageSlider(
            label="Before / after: drag to compare", type="pil", format="png", height=240, interactive=False,
            buttons=["fullscreen"], elem_id="before-after",
        )  # fmt: skip
        overlay = gr.Image(
            label="Mask used (tinted: where the edit acts)", elem_id="mask-overlay", height=240, **images
        )
    with gr.Row(elem_id="mask-and-summary"):
        summary = gr.Markdown(WELCOME, label="Summary", elem_id="summary")
        again = gr.Button("Edit this result", size="sm", elem_id="edit-this", scale=0, min_width=160)
    history = gr.Gallery(
        label="This session's edits: click one to restore its photo, prompts and settings", columns=6, height=140,
        allow_preview=False, fit_columns=False, object_fit="contain", format="png", elem_id="history",
    )  # fmt: skip
    with gr.Accordion("Details: the solver, step by step", open=False, elem_id="details-accordion"):
        residuals = gr.LinePlot(
            x="step", y="residual", color="iterate", sort="-x", elem_id="residual-plot",
            label="Solver residual per step (iterate 0: the initial guess; lower is better)",
            x_title="step (chain order)", y_title="||S(z) - y|| / ||y||", color_title="iterate",
        )  # fmt: skip
        details = gr.JSON(label="Details (solver_notes: what the solver did, in words)", max_height=360)
    found = dict(edited=edited, reconstruction=reconstruction, summary=summary, residuals=residuals, details=details)
    extras = dict(slider=slider, again=again, history=history)
    return [(found | {"overlay": overlay})[name] for name in OUTPUTS], extras


def launch(demo: gr.Blocks, host: str = HOST, port: int | None = None, block: bool = True, **options: Any) -> str:
    """Serve the editor: no share link, bounded uploads, the web guard in front of every route (``ed.WebGuard``:
    host, origin, body size, jobs per client, security headers); says where in one line (Gradio's own start-up
    lines, with their share-link hint, are off). Errors outside the handlers (Gradio's own: an API call missing an
    argument) reach the client in words; the handlers' own are ``gr.Error`` already. ``options`` go to Gradio's
    ``launch`` (``auth``, say)."""
    origins = tuple(o.strip() for o in options.pop("allowed_origins", "").split(",") if o.strip())
    on_space = bool(os.environ.get("SPACE_ID"))
    policy = ed.policy_for(host, MAX_BODY_BYTES, on_space=on_space, allowed_origins=origins)
    ed.trust_forwarded_for(on_space)
    gr.mcp.DEFAULT_TEMP_DIR = os.environ.get("GRADIO_TEMP_DIR", gr.mcp.DEFAULT_TEMP_DIR)  # base64 files: the run's
    listeners = getattr(demo, "rnri_listeners", None) or ed.Listeners()
    endpoints = lambda: {fn.api_name for fn in demo.fns.values()}  # noqa: E731  (read at each call: a reload)
    guard = Middleware(ed.WebGuard, policy=policy, listeners=listeners, queued=queued_jobs(demo, policy),
                       endpoints=endpoints)  # fmt: skip
    _, url, _ = demo.launch(
        server_name=host, server_port=port, share=False, max_file_size=MAX_FILE_SIZE, css=CSS,
        quiet=True, prevent_thread_lock=True, app_kwargs={"middleware": [guard]}, show_error=True,
        state_session_capacity=SESSIONS, **options,
    )  # fmt: skip
    if options.get("mcp_server") and options.get("auth"):
        mcp_logs_in(demo, url, options["auth"])
    scope = "this machine only" if host in ed.LOOPBACK else f"the network ({host})"
    access = "password required" if options.get("auth") else "no password"
    print(f"rnri editor at {url} ({scope}; {access}; no share link)", flush=True)
    if block:
        demo.block_thread()
    return url


def queued_jobs(demo: gr.Blocks, policy: ed.WebPolicy):
    """How many edits (jobs for the model) a client has waiting or running in ``demo``'s queue."""

    def count(client: str) -> int:
        queue = demo._queue  # Gradio keeps no count per client; its events say who sent them
        waiting = [event for line in queue.event_queue_per_concurrency_id.values() for event in line.queue]
        running = [event for jobs in queue.active_jobs if jobs for event in jobs]
        return sum(
            event.concurrency_id == "gpu" and event.request is not None and client == ed.client_of(
                event.request.headers, event.request.client.host if event.request.client else None,
                policy.behind_proxy,
            )
            for event in waiting + running
        )  # fmt: skip

    return count


def mcp_logs_in(demo: gr.Blocks, url: str, auth: tuple[str, str]) -> None:
    """Gradio 6.31's MCP tool calls go back into the app through a gradio_client of its own, made without the login:
    under --auth every call failed ("credentials were not provided"). Here that client is made, logged in."""
    demo.mcp_server_obj._client_instance = Client(
        url, auth=auth, download_files=False, verbose=False, analytics_enabled=False, ssl_verify=False,
        _skip_components=False, headers={"x-gradio-user": "mcp"},
    )  # fmt: skip


def auth_of(value: str | None) -> tuple[str, str] | None:
    """``user:password`` as Gradio's ``auth``; None without one."""
    if not value:
        return None
    user, colon, password = value.partition(":")
    if not (user and colon and password):
        raise SystemExit("--auth (or RNRI_AUTH) must be user:password, both non-empty.")
    return user, password


def build(args: argparse.Namespace) -> gr.Blocks:
    """The app for ``args``: the model loaded once (the tiny one, with a banner, when it cannot be), the page."""
    ed.configure_logging(args.log_level)
    ed.share_cpu_politely()  # before torch loads
    fast = ed.FastPath(channels_last=args.channels_last, cpu_offload=args.offload, compile=args.compile)
    resident = ed.open_model(args.model, fast=fast, fallback=True, lora=args.lora)
    ed.use_run_folder()  # Gradio's files go to this run's folder; a new start deletes those of runs that died
    listeners = ed.Listeners()  # who is behind each session: a client's inversions take at most 4 of the 16 places
    cache = ed.InversionCache(capacity=16, per_owner=4, owner=listeners.client)
    captioning = ed.open_captioning(args.captioner, resident.model, resident.pipe)
    editor = ed.Editor(resident.pipe, cache, resident.model)
    return build_demo(Handlers(editor, listeners, captioning), resident)


ARGS = parse_args(sys.argv[1:] if __name__ == "__main__" else [])
demo = build(ARGS)  # module level, as Spaces and `gradio app.py` expect

if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # docker stop: exit cleanly, deleting this run's files
    launch(
        demo, ARGS.host, ARGS.port, auth=auth_of(ARGS.auth), allowed_origins=ARGS.allowed_origins, mcp_server=ARGS.mcp
    )
