"""The page's controls, each made from the settings' one description (:mod:`rnri.core.options`): a setting's widget,
the solver's own options per method, the painter with its guard, the concept table, the outputs column, and the
``/edit`` API's signature and Args section (which Gradio's API page and the MCP tool read)."""

from __future__ import annotations

import functools
import html
import inspect
from collections.abc import Callable
from typing import Any

import gradio as gr

import rnri.editor as ed
from rnri.server.gradio_guards import PainterGuard
from rnri.server.handlers import OUTPUTS, PLOT_LABEL, WELCOME

LOCAL = ("auto_mask", "dilation", "feather", "paste_back")  # controls in the Local edit accordion; the rest: Advanced

WELCOME_PHOTO = "Upload a photo (or paste one); to change only part of it, paint there under **Local edit**."

BRUSH = gr.Brush(colors=[("#ff00c8", 0.5)], color_mode="fixed", default_size=24)  # translucent: the photo shows

ERASER = gr.Eraser(default_size=24)


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
            label=PLOT_LABEL,
            x_title="step (chain order)", y_title="||S(z) - y|| / ||y||", color_title="iterate",
        )  # fmt: skip
        details = gr.JSON(label="Details (solver_notes: what the solver did, in words)", max_height=360)
    found = dict(edited=edited, reconstruction=reconstruction, summary=summary, residuals=residuals, details=details)
    extras = dict(slider=slider, again=again, history=history)
    return [(found | {"overlay": overlay})[name] for name in OUTPUTS], extras


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
