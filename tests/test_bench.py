"""The bench: its numbers agree with the testbeds and with diffusers, and its outputs name every method."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers import LCMScheduler

from rnri.core.chain import sample
from rnri.core.inversion import invert_chain
from rnri_lab.bench import main, peer
from rnri_lab.bench.grid import PEER, QUICK, method_grid
from rnri_lab.bench.measure import measure
from rnri_lab.bench.models import chain_steps, make_model
from rnri_lab.bench.runner import run_cell
from rnri_lab.testbeds import run_testbed


@pytest.fixture(scope="module")
def subspace():
    return make_model("subspace")


def test_cells_agree_with_run_testbed(subspace):
    spec = next(s for s in method_grid((1,)) if s.label == "**rnri (old default)**")
    cell = run_cell(subspace, "lcm", "generated", spec, samples=2)
    reference = run_testbed("subspace", "generated", "lcm", "rnri", {}, samples=2)
    assert cell.reconstruction == pytest.approx(reference.reconstruction, rel=1e-6)
    assert cell.zT_std == pytest.approx(reference.zT_std, rel=1e-6)
    assert cell.recovery == pytest.approx(reference.recovery, rel=1e-6)
    assert (cell.forwards, cell.backwards) == (reference.forwards, reference.backwards) == (20, 0)  # 12, guard 8
    assert cell.forward_equivalents == 20


def test_uniform_chain_is_diffusers_ddim_sampler(subspace):
    config = LCMScheduler().config
    steps = peer.uniform_ddim_steps(config, 4)
    assert [s.t for s in steps] == [999, 749, 499, 249] and steps[-1].is_last
    z_T = torch.randn(1, *subspace.shape, generator=torch.Generator().manual_seed(0))
    ours = sample(subspace.eps_fn, steps, z_T, None)[-1]
    assert torch.allclose(ours, peer.sample(subspace.eps_fn, config, z_T, 4), atol=1e-5)


def test_our_ddim_inversion_is_diffusers_ddim_inverse_scheduler(subspace):
    config = LCMScheduler().config
    z0 = subspace.draw_data(torch.Generator().manual_seed(1))
    ours = invert_chain(subspace.eps_fn, peer.uniform_ddim_steps(config, 4), z0, [None] * 4, "ddim", None)
    theirs = peer.invert(subspace.eps_fn, config, z0, 4)
    assert torch.allclose(ours.trajectory[0], theirs, atol=1e-5)


def test_peer_runs_only_on_its_chain_and_counts_one_call_per_step(subspace):
    spec = next(s for s in method_grid((1,)) if s.method == PEER)
    assert spec.chains == ("ddim-uniform",)
    cell = run_cell(subspace, "ddim-uniform", "data", spec, samples=1)
    assert (cell.forwards, cell.backwards) == (4, 0) and cell.reconstruction > 0
    with pytest.raises(AssertionError):
        run_cell(subspace, "lcm", "data", spec, samples=1)


def test_grid_has_every_method_at_every_budget():
    labels = [s.label for s in method_grid((1, 3))]
    for expected in (
        "ddim",
        "fixed-point x3",
        "fixed-point x3 + Anderson",
        "rnri-jf x1 (official code)",
        "**rnri (old default)**",
        "rnri x3",
        "gnri x3 (the paper's Eq. 9-10)",
        "quasi-newton x1 + noise correction",
        "diffusers DDIMInverseScheduler",
    ):
        assert expected in labels
    assert "fixed-point x1 + Anderson" not in labels  # one iterate has nothing to mix


def test_chains_differ_where_they_should(subspace):
    lcm, uniform = (chain_steps(c, subspace.scheduler_config, 4) for c in ("lcm", "ddim-uniform"))
    assert [s.t for s in lcm] == [999, 759, 499, 259]
    assert all(s.c_skip == 0 and s.c_out == 1 for s in uniform)


def test_measure_records_time_and_memory():
    with measure() as usage:
        block = torch.ones(64, 2**20)  # 256 MiB
        block += 1
    assert usage.wall_s > 0 and usage.cpu_s >= 0
    assert usage.peak_mib != usage.peak_mib or usage.peak_mib > 100  # NaN only where /proc cannot be reset


def test_quick_main_writes_json_markdown_and_plot(tmp_path):
    argv = ["--quick", "--samples", "1", "--budgets", "1", "2", "--models", "diagonal", "--out", str(tmp_path)]
    assert main(argv) == 0
    cells = json.loads((tmp_path / "bench.json").read_text())["cells"]
    table = (tmp_path / "bench.md").read_text()
    labels = {s.label for s in method_grid((1, 2))}
    assert {c["label"] for c in cells} == labels
    for label in labels:
        assert f"| {label} |" in table
    assert {c["chain"] for c in cells} == set(QUICK.chains)
    assert all(c["forwards"] >= 4 for c in cells)
    png = (tmp_path / "bench.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 20_000
    assert not (tmp_path / "realsize.json").exists()  # the real-size UNet is never built by --quick


def test_edit_latency_times_every_piece_of_an_edit(tmp_path, capsys):
    from rnri_lab.bench import edit_latency

    out = tmp_path / "latency.json"
    assert edit_latency.main(["--size", "tiny", "--device", "cpu", "--repeats", "1", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["device"] == "CPU (float32)" and result["size"] == "64x64"
    rows = result["rows"]
    assert len(rows) == 6 and all(r["seconds"] > 0 for r in rows.values())
    assert {"invert (rnri, slope by autograd)", "re-edit from a cached inversion (regenerate + decode)"} <= set(rows)
    assert "| invert (rnri, slope by autograd) |" in capsys.readouterr().out


def test_batching_bench_makes_one_unet_call_per_iterate_whatever_the_batch(tmp_path):
    """``python -m rnri_lab.bench.batching --size tiny``: a default inversion of B latents (DDIM + noise correction) is
    7 UNet calls of B items for every B; its cost per image and images per second are measured."""
    from rnri_lab.bench import batching

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        argv = ["--size", "tiny", "--batches", "2", "4", "--invert-up-to", "2", "--repeats", "1"]
        assert batching.main([*argv, "--out", str(tmp_path)]) == 0
    finally:
        torch.set_num_threads(threads)
    record = json.loads((tmp_path / "batching.json").read_text())
    counted = [(c["batch"], c["calls"], c["items"]) for c in record["costs"]]
    assert counted == [(1, 7, 7), (2, 7, 14), (4, None, None)]  # batch 4: forward only
    assert record["costs"][0]["forward_per_item"] == 1.0 and record["costs"][2]["forward_per_item"] > 0
    assert all(c["per_image"] > 0 and c["images_per_s"] > 0 for c in record["costs"][:2])
    assert "| 4 |" in (tmp_path / "batching.md").read_text() and "not run" in (tmp_path / "batching.md").read_text()


def test_family_costs_count_every_backbones_default_inversion(tmp_path):
    """``python -m rnri_lab.bench.families --size tiny``: the same measurement as at real size, on the tiny
    architectures; counts do not depend on size (the default, DDIM: one call a step, and 3 more for noise
    correction where the chain injects noise: LCM, Euler ancestral)."""
    from rnri_lab.bench import families

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert families.main(["--size", "tiny", "--out", str(tmp_path)]) == 0
    finally:
        torch.set_num_threads(threads)
    record = json.loads((tmp_path / "families.json").read_text())
    counted = [(c["chain"], c["num_inference_steps"], c["forwards"], c["backwards"]) for c in record["costs"]]
    assert counted == [("lcm", 4, 7, 0), ("ddim", 50, 50, 0), ("euler", 4, 4, 0), ("euler-ancestral", 4, 7, 0)]
    assert all(c["forward_equivalents"] > 0 for c in record["costs"])
    assert record["costs"][1]["cfg_forward_equivalents"] > 0  # SD edits under CFG: one batch-2 call per step
    assert "forward-equivalents" in (tmp_path / "families.md").read_text()
