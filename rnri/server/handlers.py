"""The page's and the API's events over one editor service (:mod:`rnri.editor`): raw inputs checked into an edit
request, the edit shown in the outputs' order, refusals said on the page, the mask read from the painter, the
before/after pair, "Edit this result" and the session's history. Gradio glue with no layout: app.py places the
components and wires these to them."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import gradio as gr
import pandas as pd
from PIL import Image

import rnri
import rnri.editor as ed
import rnri.server as srv

log = logging.getLogger("rnri.app")

MAX_EDITOR_PIXELS = 4 * 1024**2  # a canvas the page sends back: the photo shown there has sides of at most 1024

DEBOUNCE_S = 0.4  # live edits wait for this long a pause in typing

OUTPUTS = ("edited", "reconstruction", "summary", "residuals", "details", "overlay")  # what /edit returns, in order

RESIDUALS = ("step", "residual", "iterate")
# Static: Gradio 6.31 cannot send a LinePlot a new label from a cached example (AttributeError: 'LinePlot' object
# has no attribute 'info'), so the label says once why the plot is empty under the default.
PLOT_LABEL = (
    "Solver residual per step (iterate 0: the initial guess; lower is better). Empty under ddim, the default: it "
    "inverts each step in one pass; the Newton-Raphson methods under Advanced plot their iterations"
)

WELCOME = "Upload a photo, describe it, say what it should become, and press **Edit**."

HINT = "nothing painted: the edit acts on all of it (paint under **Local edit** to confine it)."

REFUSED = "**Not edited.**"  # how the summary of a refused edit begins

SUGGESTED = "Suggested from the photo: edit it to say what the photo shows"  # the source prompt's line, filled in

READY = "Ready: press **Edit**, or type the target prompt: the edit follows it as you type."

HISTORY = 12  # edits a session's history keeps (the oldest dropped); Gradio keeps the state of SESSIONS sessions

NEXT = "The edit is now the photo, inverted again: type what it should become next."


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
    """The file a client sent (a FileData dict), if it is one in this run's folder (``srv.sent_file``), or None. A
    string is the server's own (Gradio's preprocessing, an example): a client's is refused by the component's data
    model before any handler runs."""
    return value if value is None or isinstance(value, str) else srv.sent_file(value, what)


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
        self, editor: ed.Editor, listeners: srv.Listeners | None = None, captioning: ed.Captioning | None = None
    ) -> None:
        self.editor, self.tickets, self.listeners = editor, ed.LatestRequest(), listeners or srv.Listeners()
        self.photos = ed.CheckedUploads()  # each session's photo, decoded once for its live re-edits
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
        loaded = self.photos.load(file_of(photo, "photo") if photo is not None else None, session)
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
