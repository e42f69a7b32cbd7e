"""Issue 20's page features on the tiny model, through the handlers and the real client: the suggested source prompt,
the before/after pair, "Edit this result" and the session's history, and the steering settings (negative prompt,
attention control, concepts) in /edit, its API page and its MCP tool, from their one description."""

from __future__ import annotations

import gradio as gr
import gradio.mcp
import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

import rnri.editor as ed
from rnri.shapes.analyze import analyze, described

from test_app import ROOT  # isort: skip
import rnri.server.handlers as server_handlers

CIRCLE = ROOT / "assets" / "shapes-red-circle.png"
CIRCLE_SAYS, HEART_SAYS = "a large red circle on a blue background", "a large pink heart on a blue background"
STEERING = [*ed.steering_controls(), "concepts"]


@pytest.fixture(scope="module")
def client(url):
    return Client(url, verbose=False)


@pytest.fixture
def handlers(app, pipe):
    captioning = ed.open_captioning("auto", "tiny", pipe)  # the shapes analyzer
    return app.Handlers(ed.Editor(pipe, ed.InversionCache(), "tiny"), captioning=captioning)


def test_an_empty_source_prompt_is_filled_with_the_analyzer_s_caption_and_typed_words_are_kept(app, handlers):
    update = handlers.suggest_caption(str(CIRCLE), "")
    with Image.open(CIRCLE) as image:
        assert update["value"] == described(image.convert("RGB")) == CIRCLE_SAYS
    assert update["info"].startswith(server_handlers.SUGGESTED)
    assert handlers.suggest_caption(str(CIRCLE), "my own words") == gr.skip()  # never replaced
    assert handlers.suggest_caption(None, "") == gr.skip()
    assert handlers.caption_event(str(CIRCLE), "")[0] == CIRCLE_SAYS  # the page fills the field if still empty
    assert handlers.caption_event(str(CIRCLE), "typed") == ("", gr.skip())


def test_without_a_captioner_the_field_stays_manual_with_one_short_note(app, pipe, tmp_path):
    captioning = ed.open_captioning(str(tmp_path / "no-such-model"), "tiny", pipe)
    handlers = app.Handlers(ed.Editor(pipe, ed.InversionCache(), "tiny"), captioning=captioning)
    update = handlers.suggest_caption(str(CIRCLE), "")
    assert "value" not in update and update["info"].startswith("No caption suggestions: could not load")
    assert len(update["info"]) < 300
    none = ed.open_captioning("none", "tiny", pipe)
    off = app.Handlers(ed.Editor(pipe, ed.InversionCache(), "tiny"), captioning=none)
    assert off.suggest_caption(str(CIRCLE), "") == gr.skip()  # turned off on purpose: nothing said


def test_the_caption_flag_is_offered_and_follows_the_environment(app, monkeypatch):
    monkeypatch.delenv("RNRI_CAPTIONER", raising=False)
    assert app.parse_args([]).captioner == "auto" and app.parse_args(["--captioner", "none"]).captioner == "none"
    monkeypatch.setenv("RNRI_CAPTIONER", "shapes")
    assert app.parse_args([]).captioner == "shapes"


def test_the_history_keeps_each_edit_bounded_and_restores_photo_prompts_and_settings(app, tmp_path, monkeypatch):
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path))  # the run's folder: the only files a page may name
    history = []
    for n in range(server_handlers.HISTORY + 3):
        photo, edited = tmp_path / f"photo{n}.png", tmp_path / f"edited{n}.png"
        Image.new("RGB", (8, 8)).save(photo)
        Image.new("RGB", (8, 8)).save(edited)
        history, gallery = app.remember(
            history, {"path": str(photo)}, {"path": str(edited)}, "src", f"target {n}", seed=n
        )
    assert len(history) == len(gallery) == server_handlers.HISTORY  # the oldest dropped
    assert gallery[0][1] == f"src → target {server_handlers.HISTORY + 2}"  # the newest first
    selected = gr.SelectData(None, {"index": 1, "value": None})
    photo, source, target, seed, method = app.restore(history, ["seed", "method"], selected)
    assert (source, target, seed) == ("src", f"target {server_handlers.HISTORY + 1}", server_handlers.HISTORY + 1)
    assert photo.endswith(f"photo{server_handlers.HISTORY + 1}.png") and method == gr.skip()  # not recorded
    assert app.remember(history, {"path": str(photo)}, None, "src", "refused") == (gr.skip(), gr.skip())
    outside = app.remember(history, {"path": str(CIRCLE)}, {"path": str(CIRCLE)}, "src", "x")
    assert outside == (gr.skip(), gr.skip())  # a file outside the run's folder is never kept


def test_before_after_pairs_the_photo_as_edited_with_its_edit(app, tmp_path, monkeypatch):
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path))
    photo, edited = tmp_path / "photo.png", tmp_path / "edited.png"
    with Image.open(CIRCLE) as image:
        image.save(photo)
    Image.new("RGB", (64, 64), "white").save(edited)
    before, after = app.before_after({"path": str(photo)}, {"path": str(edited)})
    assert analyze(before).things[0].shape == "circle" and np.asarray(after).min() == 255
    Image.new("RGB", (32, 32)).save(edited)
    assert app.before_after({"path": str(photo)}, {"path": str(edited)}) is None  # an edit of another photo
    assert app.before_after(None, {"path": str(edited)}) is None
    image, source, line = app.edit_this_result({"path": str(edited)}, HEART_SAYS)
    assert (
        Image.open(image).size == (32, 32)
        and image.endswith(".png")
        and (source, line) == (HEART_SAYS, server_handlers.NEXT)
    )
    with pytest.raises(gr.Error, match="press Edit first"):
        app.edit_this_result(None, HEART_SAYS)


@pytest.fixture(scope="module")
def endpoint(client):
    return client.view_api(print_info=False, return_format="dict")["named_endpoints"]["/edit"]


def test_the_api_page_and_the_mcp_tool_offer_the_steering_settings(app, endpoint):
    names = [p["parameter_name"] for p in endpoint["parameters"]]
    assert set(STEERING) <= set(names)
    server = gradio.mcp.GradioMCPServer(app.demo)
    block_fn = next(fn for fn in app.demo.fns.values() if fn.api_name == "edit")
    _, parameters = server.get_fn_description(block_fn, "edit")
    schema, _ = server.get_input_schema("edit", parameters)
    found = {name: prop.get("description", "") for name, prop in schema["properties"].items()}
    for name, setting in ed.steering_controls().items():  # each as its one description says
        assert found[name] == ed.explain_option(setting)
    assert "rows [text, strength, mode] (mode add or remove; at most 6)" in found["concepts"]


def test_a_negative_prompt_is_refused_with_the_reason_on_a_model_without_cfg(client):
    with pytest.raises(AppError, match="A negative prompt needs classifier-free guidance"):
        client.predict(handle_file(str(CIRCLE)), CIRCLE_SAYS, HEART_SAYS, negative_prompt="red", api_name="/edit")


def test_concepts_and_attention_control_reach_the_edit_and_bad_rows_are_refused(client):
    """A concept added everywhere (mask quantile 0) at strength 3 brings its colour, green, where the plain edit has
    none, as the analyzer reads it (the heart or the background, by the inversion); attention control changes the
    edit; a row out of range is refused, naming it."""
    photo = handle_file(str(CIRCLE))

    def edited(**steering) -> Image.Image:
        out = client.predict(photo, CIRCLE_SAYS, HEART_SAYS, **steering, api_name="/edit")
        return Image.open(out[0]).convert("RGB")

    plain = analyze(edited())
    assert [(t.shape, t.colour) for t in plain.things] == [("heart", "pink")]
    concepts = {"headers": ["text", "strength", "mode"], "data": [["green", 3.0, "add"]]}
    greened = analyze(edited(concepts=concepts, concept_threshold=0.0))
    assert "green" in {greened.background} | {t.colour for t in greened.things}, greened  # the plain edit has none
    controlled = np.asarray(edited(attention_control=True), dtype=np.int16)
    assert np.abs(controlled - np.asarray(edited(), dtype=np.int16)).mean() > 0.05  # the photo's attention reused
    with pytest.raises(AppError, match="Concept 1"):
        edited(concepts={"headers": ["a", "b", "c"], "data": [["green", 9.0, "add"]]})
