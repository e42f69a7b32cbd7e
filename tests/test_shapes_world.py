"""The shapes world, its renderer, tokenizer and analyzer, and the ShapeEdit ground truth: exact, no model needed."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from rnri.shapes.analyze import analyze, match
from rnri.shapes.render import render
from rnri.shapes.tokenizer import shapes_tokenizer
from rnri.shapes.world import BACKGROUNDS, COLOURS, HELD_OUT, SHAPES, SIZES, Scene, Thing, scenes, vocabulary
from rnri_lab.shapes.edits import KINDS, shape_edit
from rnri_lab.shapes.score import edited_region, score_edit


def test_scenes_are_seeded():
    assert scenes(3, 20) == scenes(3, 20)
    assert scenes(3, 20) != scenes(4, 20)
    assert np.array_equal(np.asarray(render(scenes(3, 1)[0]).image), np.asarray(render(scenes(3, 1)[0]).image))


def test_grammar_is_as_large_as_promised():
    assert len(SHAPES) >= 5 and len(COLOURS) >= 8 and len(SIZES) == 2
    assert {"striped", "checkered", "gradient"} <= set(BACKGROUNDS) and len(BACKGROUNDS) >= 6


def test_held_out_pairs_never_appear_in_training_and_always_in_test():
    train, test = scenes(0, 400, "train"), scenes(0, 200, "test")
    assert not any((t.colour, t.shape) in HELD_OUT for s in train for t in s.things)
    assert all(any((t.colour, t.shape) in HELD_OUT for t in s.things) for s in test)


def test_objects_are_inside_apart_and_visible():
    for scene in scenes(1, 200):
        masks = render(scene).masks
        assert all(m[0].max() == m[-1].max() == m[:, 0].max() == m[:, -1].max() == 0 for m in masks)  # not on edges
        if len(masks) == 2:
            assert (masks[0] * masks[1]).max() == 0
        assert all(t.colour != scene.background for t in scene.things)


def test_caption_names_every_attribute_left_to_right():
    scene = Scene((Thing("star", "yellow", "large", 40, 30), Thing("square", "green", "small", 15, 30)), "gray")
    assert scene.caption == "a large yellow star and a small green square on a gray background"
    two = next(s for s in scenes(2, 50) if len(s.things) == 2)
    assert two.things[0].x <= two.things[1].x


def test_tokenizer_has_one_token_per_word_and_still_takes_any_text(tmp_path):
    tokenizer = shapes_tokenizer()
    for word in vocabulary():
        assert len(tokenizer(word).input_ids) == 3  # start, the word, end
    unknown = tokenizer("a photo of a cat, Ünïcode €").input_ids
    assert tokenizer.unk_token_id not in unknown[1:-1] and len(unknown) > 6
    tokenizer.save_pretrained(tmp_path)
    from transformers import CLIPTokenizer

    loaded = CLIPTokenizer.from_pretrained(tmp_path)
    caption = scenes(0, 1)[0].caption
    assert loaded(caption).input_ids == tokenizer(caption).input_ids
    assert loaded.model_max_length == tokenizer.model_max_length


def test_analyzer_reads_every_render_exactly():
    for scene in scenes(5, 150, "all"):
        analysis = analyze(render(scene).image)
        assert analysis.background == scene.background
        found = match(scene, analysis)
        assert [(f.shape, f.colour, f.size) for f in found] == [(t.shape, t.colour, t.size) for t in scene.things]
        assert all(f.fit == 1.0 for f in found)


def test_analyzer_tolerates_noise_and_blur():
    rng = np.random.default_rng(0)
    right = 0
    sample = scenes(6, 60, "all")
    for scene in sample:
        pixels = np.asarray(render(scene).image, np.float32) + rng.normal(0, 12, (64, 64, 3))
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
        image = image.resize((48, 48), Image.Resampling.BILINEAR).resize((64, 64), Image.Resampling.BILINEAR)
        analysis = analyze(image)
        found = match(scene, analysis)
        right += analysis.background == scene.background and all(
            f is not None and (f.shape, f.colour) == (t.shape, t.colour) for f, t in zip(found, scene.things)
        )
    assert right >= 0.95 * len(sample)


def test_analyzer_finds_no_object_on_an_empty_background():
    for background in BACKGROUNDS:
        analysis = analyze(render(Scene((), background)).image)
        assert analysis.background == background and analysis.things == ()


def test_every_edit_changes_exactly_one_attribute():
    groups = shape_edit(0, 30)
    kinds = {e.kind for _, edits in groups for e in edits}
    assert kinds == set(KINDS)
    for source, edits in groups:
        for edit in edits:
            assert edit.source == source and edit.target != source
            before = [(t.shape, t.colour, t.size, t.x, t.y) for t in source.things] + [source.background]
            after = [(t.shape, t.colour, t.size, t.x, t.y) for t in edit.target.things] + [edit.target.background]
            differing = [i for i, (a, b) in enumerate(zip(before, after)) if a != b]
            assert len(differing) == 1


@pytest.mark.parametrize("group", [0, 1, 2])
def test_the_ideal_edit_scores_perfectly_and_the_unedited_photo_fails(group):
    source, edits = shape_edit(1, 3)[group]
    photo = render(source).image
    for edit in edits:
        ideal = score_edit(edit, render(edit.target).image, photo)
        assert ideal.success and ideal.preservation == 1.0 and ideal.object_iou == 1.0
        assert ideal.target_psnr == math.inf
        assert edit.index is None or ideal.background_psnr == math.inf
        unchanged = score_edit(edit, photo, photo)
        assert not unchanged.success and unchanged.preservation == 1.0


def test_the_edited_region_covers_what_changes():
    for _, edits in shape_edit(2, 6):
        for edit in edits:
            changed = np.any(np.asarray(render(edit.source).image) != np.asarray(render(edit.target).image), axis=-1)
            assert not (changed & ~edited_region(edit)).any()
