"""rnri's real-time editor: upload a photo, say what it shows and what it should become, and get the edit.

Gradio glue over the editor service (``rnri.editor``), which does the work: checked uploads, the inversion cached per
session (a new target prompt, edit guidance or painted mask costs one pass of the chain), reports. The controls are
made from the settings' one description (``rnri.core.options``). Run ``python app.py --help``; docs/app.md has the
rest.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from pathlib import Path

import gradio as gr

import rnri
import rnri.editor as ed
import rnri.server as srv
from rnri.server.handlers import (
    OUTPUTS,
    Handlers,
    before_after,
    clear_mask,
    edit_this_result,
    read_mask,
    recheck,
    remember,
    restore,
    show_photo,
)
from rnri.server.launch import HOST, auth_of, launch
from rnri.server.style import KEEP_TYPED, PAGE_SCRIPT, SHOW_EDIT, SHOW_RESULT
from rnri.server.widgets import (
    WELCOME_PHOTO,
    banner,
    controls_of,
    inputs_column,
    outputs_column,
    solver_controls,
    with_settings,
)

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
QUEUE_SIZE = 16  # waiting requests beyond this are turned away ("queue full") instead of piling up
DELETE_CACHE = (300, 1800)  # every 5 minutes, Gradio's files unused for 30 (uploads, served images) are deleted
PENDING = "Editing the example…"
HIDDEN = dict(show_progress="hidden", api_visibility="private")  # events of the page's own, with no spinner


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Command-line options; each defaults to its environment variable."""
    env = os.environ.get
    p = argparse.ArgumentParser(description="rnri real-time photo editor (Gradio)")
    ed.share_cpu_politely()  # before torch loads: the offload's choices and the caption's flag import it
    ed.add_model_flags(p, os.environ, model=rnri.DEFAULT_MODEL)
    p.add_argument("--host", default=env("GRADIO_SERVER_NAME", HOST), help="address to bind (%(default)s)")
    p.add_argument("--port", type=int, default=env("GRADIO_SERVER_PORT", "7860"), help="port (%(default)s)")
    p.add_argument("--auth", default=env("RNRI_AUTH"), help="user:password asked of every visitor (RNRI_AUTH)")
    p.add_argument(
        "--allowed-origins", default=env("RNRI_ALLOWED_ORIGINS", ""),
        help="comma-separated origins (https://example.org) of other sites whose pages may call this server",
    )  # fmt: skip
    p.add_argument(
        "--mcp", action="store_true", default=env("RNRI_MCP", env("GRADIO_MCP_SERVER", "")).lower() in ("1", "true"),
        help="also serve the editor as an MCP tool at /gradio_api/mcp/ (RNRI_MCP=1); off by default",
    )  # fmt: skip
    ed.add_arguments(p, ed.settings_of(ed.CaptionOptions), {"captioner": env("RNRI_CAPTIONER", "auto")})
    p.set_defaults(captioner=env("RNRI_CAPTIONER", "auto"))
    return p.parse_args(argv)


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


def build(args: argparse.Namespace) -> gr.Blocks:
    """The app for ``args``: the model loaded once (the tiny one, with a banner, when it cannot be), the page."""
    ed.configure_logging(args.log_level)
    ed.share_cpu_politely()  # before torch loads
    fast = ed.FastPath(channels_last=args.channels_last, cpu_offload=args.offload, compile=args.compile)
    resident = ed.open_model(args.model, fast=fast, fallback=True, lora=args.lora)
    srv.use_run_folder()  # Gradio's files go to this run's folder; a new start deletes those of runs that died
    listeners = srv.Listeners()  # who is behind each session: a client's inversions take at most 4 of the 16 places
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
