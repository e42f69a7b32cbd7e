"""Steering an edit through the editor service (``rnri.editor.steering``): the negative prompt, concept rows and
attention control as settings described once, read back checked, passed to the public API as it is called directly,
re-edited from the cached inversion, and refused with the reason on a backbone that has no place for them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import rnri
import rnri.editor as ed
from rnri.core.directions import Direction, Directions
from rnri.pipelines.attention import AttentionControl, inject_keys_values, replace

ROOT = Path(__file__).resolve().parents[1]
PHOTO = ROOT / "assets" / "shapes-red-circle.png"
SOURCE, TARGET = "a large red circle on a blue background", "a large yellow circle on a blue background"
FAST = {"method": "ddim", "num_inference_steps": 4}  # what inverts is not what these tests are about


@pytest.fixture(scope="module")
def teacher():
    return rnri.load_pipeline("tiny-teacher", device="cpu")


PLAIN = ed.Steering()


def request(pipe, steering=PLAIN, source=SOURCE, target=TARGET, session="s", **form) -> ed.EditRequest:
    choices = ed.read_form(FAST | form, pipe)
    return ed.EditRequest(ed.load_photo(PHOTO), None, source, target, choices, session, steering)


def test_every_steering_setting_is_described_once_and_named_apart_from_the_form(pipe):
    offered = ed.steering_controls()
    assert not set(offered) & set(ed.controls(pipe))  # one /edit parameter namespace
    for name, setting in offered.items():
        assert setting.name == name and len(setting.option.help) > 20 and ed.explain_option(setting)
    defaults = AttentionControl()
    assert offered["self_fraction"].default == defaults.self_fraction and offered["local_blend"].default is True
    assert offered["concept_threshold"].default == Directions((Direction("x"),)).threshold
    assert offered["concept_threshold"].option.high < 1 and not offered["concept_threshold"].optional
    assert list(ed.concept_columns()) == ["text", "strength", "mode"]


def test_the_defaults_steer_nothing_and_values_become_the_apis_objects(pipe):
    assert ed.read_steering({}, pipe, 8.5) == ed.Steering()
    assert ed.Steering().regenerate_kwargs() == {"negative_prompt": None, "control": None, "directions": None}
    values = {"attention_control": True, "self_fraction": 0.25, "injection": "keys-values", "alignment": "replace",
              "local_blend": False, "concept_threshold": 0.8, "concept_warmup": 0.25}  # fmt: skip
    rows = [["blue", 1.5, "add"], {"text": "red", "strength": 0.5, "mode": "remove"}, ["", 1, "add"], ["x", 0, "add"]]
    steering = ed.read_steering(values, pipe, 8.5, rows)
    assert steering.control == AttentionControl(self_fraction=0.25, inject=inject_keys_values, align=replace,
                                                local_blend=False)  # fmt: skip
    assert steering.directions == Directions((Direction("blue", 1.5), Direction("red", -0.5)), threshold=0.8,
                                             warmup=0.25)  # fmt: skip
    assert steering.branches == 1 + 1 + 2 + 1  # the edit, the photo's, two concepts and the reference
    everywhere = ed.read_steering({"concept_threshold": 0}, pipe, 8.5, [["blue"]])
    assert everywhere.directions.threshold is None and everywhere.directions.terms == (Direction("blue", 1.0),)


@pytest.mark.parametrize(
    "values, rows, words",
    [
        ({"self_fraction": 2}, None, "Layout kept must be a number from 0 to 1"),
        ({"injection": "values"}, None, "Self-attention from the photo must be one of maps, keys-values"),
        ({"concept_threshold": 1}, None, "Concept mask must be a number from 0 to 0.99"),
        ({}, [["blue", "lots", "add"]], "Concept 1: Strength must be a number"),
        ({}, [["blue", 1, "add"], ["red", 1, "swap"]], "Concept 2: Add or remove must be one of add, remove"),
        ({}, [{"text": "blue", "weight": 1}], "Concept 1: unknown columns ['weight']"),
        ({}, [["blue", 1, "add", "extra"]], "Concept 1: a row is [text, strength, add or remove]"),
        ({}, "blue", "Concepts are rows"),
        ({}, [[f"word {n}"] for n in range(ed.MAX_CONCEPTS + 1)], f"At most {ed.MAX_CONCEPTS} concepts"),
        ({"negative_prompt": 3}, None, "Negative prompt must be a string"),
    ],
)
def test_bad_steering_values_are_refused_naming_the_setting(teacher, pipe, values, rows, words):
    with pytest.raises(ed.InputError, match=words.replace("[", r"\[").replace("]", r"\]")):
        ed.read_steering(values, pipe, 8.5, rows)


def test_a_page_table_and_the_apis_table_read_alike(pipe):
    import pandas as pd

    rows = [["blue", 1.0, "add"], ["red", 0.5, "remove"]]
    table = pd.DataFrame(rows, columns=["text", "strength", "mode"])
    empty = pd.DataFrame([["blue", float("nan"), "add"]], columns=["text", "strength", "mode"])
    found = ed.read_concepts(rows)
    assert ed.read_concepts(table) == found == ed.read_concepts({"headers": list(table), "data": rows})
    assert ed.read_concepts(empty) == (Direction("blue", 1.0),)  # an empty cell is the column's default


def test_which_controls_apply_follows_the_backbone_and_the_edit_guidance(pipe, teacher):
    lcm = ed.steering_not_applicable(pipe)
    assert list(lcm) == ["negative_prompt"] and "embedding" in lcm["negative_prompt"]
    sd = ed.steering_not_applicable(teacher)
    assert set(sd) == {*ed.steering_controls(), "concepts"} - {"negative_prompt"}
    assert "LCM pipelines" in sd["concepts"] == sd["attention_control"]
    assert "negative_prompt" in ed.steering_not_applicable(teacher, 1.0)  # no CFG at guidance 1


@pytest.mark.parametrize("model, how", [("tiny-flux", "takes no guidance"), ("tiny-flux-dev", "as an embedding")])
def test_flux_has_no_place_for_a_negative_prompt_nor_for_control(model, how):
    found = ed.steering_not_applicable(rnri.load_pipeline(model, device="cpu"))
    assert how in found["negative_prompt"] and "LCM pipelines" in found["attention_control"]


@pytest.mark.parametrize(
    "model, values, rows, words",
    [
        ("tiny", {"negative_prompt": "red"}, None, "takes its guidance as an embedding"),
        ("tiny-teacher", {"attention_control": True}, None, "run on LCM pipelines"),
        ("tiny-teacher", {}, [["blue", 1, "add"]], "run on LCM pipelines"),
    ],
)
def test_unsupported_steering_is_refused_with_the_reason_before_any_work(model, values, rows, words):
    pipe = rnri.load_pipeline(model, device="cpu")
    with pytest.raises(ed.InputError, match=words):
        ed.read_steering(values, pipe, rnri.default_guidance(pipe, edit=True), rows)
    steering = ed.Steering(
        values.get("negative_prompt", ""),
        ed.read_concepts(rows),
        control=AttentionControl() if values.get("attention_control") else None,
    )  # built directly, as an API user might: the service refuses it too, before inverting
    editor = ed.Editor(pipe)
    with pytest.raises(ed.InputError, match=words):
        editor.edit(request(pipe, steering))
    assert len(editor.cache) == 0


def test_attention_control_without_a_source_prompt_is_refused(pipe):
    editor = ed.Editor(pipe)
    with pytest.raises(ed.InputError, match="describe it"):
        editor.edit(request(pipe, ed.Steering(control=AttentionControl()), source=""))


def test_the_service_edits_as_the_api_does_and_steering_re_edits_from_the_cache(pipe):
    editor = ed.Editor(pipe)
    plain = editor.edit(request(pipe))
    steering = ed.read_steering({"attention_control": True, "local_blend": False}, pipe, 8.5, [["blue", 0.5, "add"]])
    steered = editor.re_edit(request(pipe, steering))
    assert steered is not None and steered.report.details["inversion_cached"]
    inv = plain.inversion
    direct = rnri.regenerate(pipe, inv, TARGET, guidance_scale=8.5, **steering.regenerate_kwargs())
    assert torch.equal(torch.tensor(list(steered.image.getdata())), torch.tensor(list(direct.getdata())))
    assert steered.image.tobytes() != plain.image.tobytes()
    assert editor.re_edit(request(pipe, steering)) is None  # the page shows this edit already


def test_the_negative_prompt_reaches_the_teachers_edit(teacher):
    editor = ed.Editor(teacher)
    plain = editor.edit(request(teacher))
    steered = editor.re_edit(request(teacher, ed.read_steering({"negative_prompt": "red"}, teacher, 7.5)))
    direct = rnri.regenerate(teacher, plain.inversion, TARGET, guidance_scale=7.5, negative_prompt="red")
    assert steered.image.tobytes() == direct.tobytes() != plain.image.tobytes()


def test_a_zerogpu_lease_counts_the_steerings_branches(pipe):
    editor = ed.Editor(pipe)
    inv = rnri.invert(pipe, SOURCE, latents=torch.zeros(1, 4, 64, 64), method="ddim")  # a 512x512 photo's latents
    local = ed.LocalEdit()
    plain = editor.edit_lease(inv, TARGET, 8.5, None, local)
    steered = editor.edit_lease(inv, TARGET, 8.5, None, local, ed.Steering(control=AttentionControl()))
    assert steered > plain
