"""ShapeEdit's paired comparisons (``--caption analyzer``, ``--negative``): the cluster bootstrap over photos, the
twins it compares, and a twin run end to end on the shapes LCM."""

from __future__ import annotations

import numpy as np
import pytest

from rnri_lab.bench.paired_edits import paired_bootstrap
from rnri_lab.bench.shapes import paired_markdown, run, source_attribute, twins
from rnri_lab.shapes.edits import shape_edit


def test_a_constant_difference_has_no_spread_and_a_null_one_is_zero():
    photos = np.repeat(np.arange(10), 3)
    a = np.random.default_rng(0).random(30)
    shifted = paired_bootstrap(a, a + 0.5, photos)
    assert shifted.mean == pytest.approx(0.5) and (shifted.low, shifted.high) == pytest.approx((0.5, 0.5))
    assert (shifted.better, shifted.same, shifted.worse) == (30, 0, 0)
    same = paired_bootstrap(a, a, photos)
    assert (same.mean, same.low, same.high, same.same) == (0.0, 0.0, 0.0, 30)


def test_the_interval_resamples_photos_not_edits():
    """One photo of 10 gains on its 3 edits, the others not at all: a resample draws that photo in none of its 10
    draws about a third of the time, so the interval reaches down to 0."""
    photos = np.repeat(np.arange(10), 3)
    a, b = np.zeros(30), np.zeros(30)
    b[:3] = 1.0  # photo 0's edits
    found = paired_bootstrap(a, b, photos)
    assert found.mean == pytest.approx(0.1) and found.low == 0.0 and found.high > 0.2
    assert found == paired_bootstrap(a, b, photos)  # seeded
    with pytest.raises(ValueError, match="1-d of one length"):
        paired_bootstrap(a, b[:5], photos)


def test_the_negative_prompt_names_the_attribute_the_edit_changes():
    for _, edits in shape_edit(0, 12):
        for edit in edits:
            named = source_attribute(edit)
            if edit.index is None:
                assert named == f"{edit.source.background} background"
            else:
                before = edit.source.things[edit.index]
                assert named == getattr(before, edit.attribute) and named in edit.source.caption.split()
                assert named != getattr(edit.target.things[edit.index], edit.attribute)


def test_the_twins_differ_from_the_default_row_in_one_thing_each():
    base, caption, negative = twins(caption=True, negative=True)
    assert base.caption is None and base.negative is None
    assert caption.caption is not None and caption.negative is None and caption.label.startswith(base.label)
    assert negative.negative is source_attribute and negative.caption is None


def test_the_analyzers_caption_twin_runs_end_to_end_and_pairs_with_the_truth(pipe):
    variants = twins(caption=True, negative=False)
    _, rows = run(pipe, variants, photos=1, seed=1, guidance=8.5)
    first, second = ([r.success for r in rows if r.variant == v.label] for v in variants)
    assert first == second and first  # the analyzer reads a render exactly: the same inversion, the same edits
    text = paired_markdown(variants, rows, shape_edit(1, 1))
    assert "+0.000 [+0.000, +0.000]" in text and "true caption on 1 of 1 photos" in text


def test_the_negative_twin_is_refused_on_a_backbone_without_cfg(pipe):
    with pytest.raises(ValueError, match="guidance as an embedding"):
        run(pipe, twins(caption=False, negative=True)[1:], photos=1, seed=1, guidance=8.5)
