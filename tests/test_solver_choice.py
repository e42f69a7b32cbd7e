"""The pre-registered comparison's machinery (rnri_lab.bench.solver_choice, rnri_lab.bench.paired) on made-up rows: the
intervals, the choice of iteration counts, the decision rule, and resuming from finished rows. No model runs."""

from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np
from tqdm import tqdm

from rnri_lab.bench.paired import PerPhoto, difference, mean_interval, resamples
from rnri_lab.bench.shapes import EditRow, PhotoRow
from rnri_lab.bench.solver_choice import QUICK, Runner, Summary, choose, decide, label, slug, variant


def per_photo(values: list[float]) -> PerPhoto:
    return PerPhoto(np.array(values, float), np.ones(len(values)))


def summary(name_of, success: list[float], preservation: list[float], fwd_eq: float) -> Summary:
    photos = len(success)
    recon = per_photo([30.0] * photos)
    return Summary(name_of, per_photo(success), per_photo(preservation), recon, 34.7, fwd_eq, 1.0, 0.0, photos)


def test_paired_intervals_cancel_what_photos_share():
    rng = np.random.default_rng(0)
    base = rng.random(40)  # photos differ a lot; a row better by 0.05 on every photo is better beyond doubt
    draws = resamples(40)
    shifted = difference(per_photo(list(base + 0.05)), per_photo(list(base)), draws)
    assert shifted.low > 0.0 and abs(shifted.value - 0.05) < 1e-12
    alone = mean_interval(per_photo(list(base)), draws)
    assert alone.low < base.mean() < alone.high and alone.high - alone.low > 0.1  # unpaired: wide
    same = difference(per_photo(list(base)), per_photo(list(base)), draws)
    assert (same.low, same.value, same.high) == (0.0, 0.0, 0.0)


def test_the_decision_takes_the_cheapest_row_not_worse_than_the_leader():
    photos = 40
    ones, half = [1.0] * photos, [0.5] * photos
    leader = summary(variant("quasi-newton", 2, True, 1.0), ones, [0.9] * photos, 10.0)
    tied = summary(variant("ddim", None, True, 1.0), [1.0] * 38 + [0.0] * 2, [0.9] * photos, 7.0)
    worse = summary(variant("ddim", None, False, 1.0), half, [0.9] * photos, 4.0)
    winner, tied_rows, top = decide([leader, tied, worse], photos)
    assert top is leader and winner is tied
    assert worse not in tied_rows  # cheaper still, but its success is worse by a paired interval


def test_the_selection_picks_the_best_score_and_the_cheaper_of_equals():
    photos = 10
    rows = []
    for method in ("fixed-point", "rnri-jf", "gnri", "rnri", "quasi-newton"):
        for correction in (False, True):
            for k in QUICK.iterations:
                score = 0.5 if (method == "rnri" and k == 2) else 0.4
                rows.append(summary(variant(method, k, correction, 1.0), [score] * photos, [1.0] * photos, 4.0 * k))
    choice = choose(rows, QUICK)
    assert choice["rnri|False|1"] == 2 and choice["rnri|True|1"] == 2
    assert choice["gnri|False|1"] == 1  # equal scores: the cheaper


def test_a_finished_row_is_read_back_not_run_again(tmp_path):
    row = variant("ddim", None, True, 1.0)
    photo = PhotoRow(row.label, 31.0, 34.7, 1.3, 0.8, 7, 0, 0.1, photo=0, noise_seed=1)
    edit = EditRow(row.label, "colour", True, 0.9, 0.5, 33.0, 21.0, edit_s=0.1, photo=0, noise_seed=1)
    raw = tmp_path / "raw"
    raw.mkdir()
    name = f"tiny-scenes2-1-noise1-{slug(row.label)}.json"
    (raw / name).write_text(json.dumps({"photos": [asdict(photo)], "edits": [asdict(edit)]}))
    runner = Runner(tmp_path, tqdm(disable=True))
    results = runner.run("tiny", [row], photos=1, seed=2, noise_seeds=(1,))
    assert results.photos[row.label] == [photo] and results.edits[row.label] == [edit]
    assert runner.pipes == {}  # no model was loaded


def test_row_labels_say_method_iterations_correction_strength_and_guidance():
    assert label("quasi-newton", 2, True, 0.5, 7.5) == "quasi-newton x2 + correction, strength 0.5, inversion at 7.5"
    assert label("ddim", None, False, 1.0, None) == "ddim"


def test_costs_are_not_capped_like_psnr():
    """A PSNR of an identical picture (inf) counts as 60 dB; a cost of 200 forward-equivalents stays 200."""
    from rnri_lab.bench.solver_choice import per_photo as sums

    row = PhotoRow("gnri x2", float("inf"), 34.7, 1.0, 0.5, 100, 50, 1.0, photo=0)
    assert sums([row], "fwd_eq", 1).mean() == 200.0
    assert sums([row], "reconstruction_psnr", 1).mean() == 60.0
