"""Batches: ``rnri.invert`` and ``rnri.regenerate`` on several photos at once give each photo its own single-item
result, every UNet call on the whole batch; ``rnri batch --batch-size`` and ``accelerate launch`` change nothing but
how the work is shared."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import free_port, noise_image
from PIL import Image
from test_cli import TINY, run

import rnri
from rnri.core.chain import step_map
from rnri.core.counting import count_unet_calls
from rnri.core.solvers import METHODS, StepProblem, get_method, make_config
from rnri_lab.analytic import GaussianMixtureUNet, MixtureConfig

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = ["a photo of a cat", "a red barn", "two dogs in the snow"]
SEEDS = [3, 7, 11]
TARGETS = ["a tiger", "a blue barn", "two cats"]


@pytest.fixture(scope="module")
def photos() -> list[Image.Image]:
    return [noise_image(70, 50, seed=s) for s in range(3)]


def close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return torch.allclose(a, b, rtol=1e-4, atol=1e-4)


def max_pixel_difference(a: Image.Image, b: Image.Image) -> int:
    return int(np.abs(np.asarray(a, dtype=int) - np.asarray(b, dtype=int)).max())


@pytest.mark.parametrize("method", ["rnri", "ddim"])
def test_a_batch_equals_its_photos_one_at_a_time(pipe, photos, method):
    with count_unet_calls(pipe.unet) as calls:
        invs = rnri.invert(pipe, PROMPTS, image=photos, seed=SEEDS, method=method)
    singles = [rnri.invert(pipe, p, image=im, seed=s, method=method) for p, im, s in zip(PROMPTS, photos, SEEDS)]
    assert calls.items == 3 * calls.forwards  # each UNet call takes the whole batch
    for inv, one in zip(invs, singles):
        assert (
            (inv.unet_forwards, inv.unet_backwards) == (one.unet_forwards, one.unet_backwards) == (calls.forwards, 0)
        )
        assert (inv.prompt, inv.seed, inv.image_size, inv.timesteps) == (
            one.prompt,
            one.seed,
            one.image_size,
            one.timesteps,
        )
        assert close(inv.latents, one.latents) and all(map(close, inv.trajectory, one.trajectory))
        assert all(a is None and b is None or close(a, b) for a, b in zip(inv.noises, one.noises))
        assert np.allclose(sum(inv.residuals, []), sum(one.residuals, []), atol=1e-4)
    with count_unet_calls(pipe.unet) as calls:
        latents = rnri.regenerate(pipe, invs, TARGETS, output_type="latent")
    assert (calls.forwards, calls.items, latents.shape[0]) == (4, 12, 3)
    images = rnri.regenerate(pipe, invs, TARGETS)
    for b, (one, target) in enumerate(zip(singles, TARGETS)):
        assert close(latents[b : b + 1], rnri.regenerate(pipe, one, target, output_type="latent"))
        assert max_pixel_difference(images[b], rnri.regenerate(pipe, one, target)) <= 1  # uint8 rounding at most


def test_a_stock_pipeline_replays_a_batch_from_its_seeds(pipe, photos):
    """Each item's noises are its own seed's, as a stock pipeline draws them from a list of generators."""
    invs = rnri.invert(pipe, PROMPTS, image=photos, seed=SEEDS, noise_correction=False)
    assert [inv.seed for inv in invs] == SEEDS
    stock = pipe(
        PROMPTS,
        latents=torch.cat([inv.latents for inv in invs]),
        generator=[torch.Generator().manual_seed(s) for s in SEEDS],
        num_inference_steps=4,
        guidance_scale=invs[0].guidance_scale,
        output_type="latent",
    ).images
    assert close(rnri.regenerate(pipe, invs, PROMPTS, output_type="latent"), stock)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_no_item_of_a_batch_moves_another(method, steps):
    """Three exact problems of very different scale solved together give each its single answer: no norm, step
    length, line search or choice of the best iterate is shared between items."""
    model = GaussianMixtureUNet(MixtureConfig(family="diagonal"))

    def eps_fn(z, t):
        return model(z, t, return_dict=False)[0]

    scale = torch.tensor([1.0, 50.0, 0.02]).view(3, 1, 1, 1)
    z_true = scale * torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = step_map(z_true, eps_fn(z_true, steps[1].t), steps[1], None)
    options = {"rnri": {"iterations": 3}, "fixed-point": {"anderson": 2}}.get(method, {})
    solve, config = get_method(method).solve, make_config(method, options)
    together = solve(StepProblem(eps_fn, steps[1], y, None, y), config)
    for b in range(3):
        alone = solve(StepProblem(eps_fn, steps[1], y[b : b + 1], None, y[b : b + 1]), config)
        assert torch.allclose(together.z[b : b + 1], alone.z, rtol=1e-5, atol=1e-6 * scale[b].item())
        assert [r[b].item() for r in together.residuals] == pytest.approx([r.item() for r in alone.residuals], 1e-4)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"prompt": PROMPTS, "image": "one"}, "a batch takes a list of 3 images, one per prompt"),
        ({"prompt": PROMPTS[:2], "image": "all"}, "a batch takes a list of 2 images"),
        ({"prompt": PROMPTS, "image": "all", "seed": [1, 2]}, "a list of 3 integers"),
        ({"prompt": "a cat", "image": "all"}, "a batch takes a list of prompts, one per image"),
        ({"prompt": PROMPTS, "latents": torch.zeros(1, 4, 8, 8)}, r"shape \(3, 4, h, w\)"),
        ({"prompt": [], "image": []}, "a non-empty list"),
        ({"prompt": PROMPTS, "image": "mixed"}, "must fit to one size"),
    ],
)
def test_a_bad_batch_is_refused_in_words(pipe, photos, kwargs, message):
    images = {"one": photos[0], "all": photos, "mixed": [*photos[:2], noise_image(40, 60)]}
    if isinstance(kwargs.get("image"), str):
        kwargs = kwargs | {"image": images[kwargs["image"]]}
    with pytest.raises(ValueError, match=message):
        rnri.invert(pipe, method="ddim", **kwargs)


def test_regenerate_refuses_a_batch_it_cannot_run_as_one(pipe, photos):
    invs = rnri.invert(pipe, PROMPTS[:2], image=photos[:2], method="ddim")
    with pytest.raises(ValueError, match="a list of as many prompts"):
        rnri.regenerate(pipe, invs, "a tiger")
    with pytest.raises(ValueError, match="one inversion at a time"):
        rnri.regenerate(pipe, invs, TARGETS[:2], mask="auto")
    other = rnri.invert(pipe, "a cat", image=photos[2], method="ddim", guidance_scale=2.0)
    with pytest.raises(ValueError, match="must share their chain, timesteps, guidance"):
        rnri.regenerate(pipe, [*invs, other], TARGETS)


def make_photos(folder: Path) -> Path:
    """Four photos, three of one size and one of another (batched apart), a caption file, an unreadable file."""
    folder.mkdir()
    for seed, size in enumerate([(64, 48), (40, 60), (64, 48), (64, 48)]):
        noise_image(*size, seed=seed).save(folder / f"p{seed}.png")
    (folder / "p2.txt").write_text("a photo of a dog\n")
    return folder


def outputs(out: Path) -> dict[str, Path]:
    return {p.relative_to(out).as_posix(): p for p in sorted(out.rglob("*")) if p.is_file()}


def test_batch_size_changes_only_how_many_photos_share_a_unet_call(capsys, tmp_path, monkeypatch):
    photos = make_photos(tmp_path / "photos")
    (photos / "broken.png").write_bytes(b"\x89PNG not really")
    (photos / "p3.txt").write_text("poison\n")  # its inversion fails only when batched (below)
    targets = tmp_path / "targets.txt"
    targets.write_text("a tiger\na fox in the snow\n")
    invert = rnri.invert

    def failing_when_batched(pipe, prompt, **kwargs):
        if "poison" in prompt and len(prompt) > 1:
            raise rnri.InversionError("a batch holding the poisoned photo fails")
        return invert(pipe, prompt, **kwargs)

    monkeypatch.setattr(rnri, "invert", failing_when_batched)
    runs = {}
    for size in (1, 3):
        out = tmp_path / f"out{size}"
        argv = ["batch", photos, "--targets", targets, "-o", out, "--source", "x", "--quiet", "--batch-size", size]
        code, stdout, stderr = run(capsys, *argv, *TINY)
        assert code == 1 and "5 image(s): 4 edited (8 file(s) written), 0 already done, 1 failed" in stdout
        assert "broken.png" in stderr and "poison" not in stderr  # the batch was redone photo by photo
        runs[size] = outputs(out)
    assert runs[1].keys() == runs[3].keys() and len(runs[1]) == 9
    assert runs[1]["manifest.jsonl"].read_text() == runs[3]["manifest.jsonl"].read_text()
    for name, path in runs[1].items():
        if name.endswith(".png"):
            with Image.open(path) as one, Image.open(runs[3][name]) as batched:
                assert max_pixel_difference(one, batched) <= 1  # float rounding of batched convolutions


def launch(*argv: str | Path, processes: int) -> subprocess.CompletedProcess:
    """``rnri batch`` in its own process(es); one thread each, as torchrun gives each process, so that the arithmetic
    (and so every output byte) is the same however many processes run."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    prefix = [sys.executable]
    if processes > 1:
        prefix += ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes)]
        prefix += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
        prefix += ["--main_process_port", str(free_port())]
    command = [*prefix, "-m", "rnri", "batch", *map(str, argv), "--quiet", *TINY]
    return subprocess.run(command, capture_output=True, text=True, timeout=240, env=env, cwd=ROOT)


def test_accelerate_launch_shares_out_the_photos_and_resumes(tmp_path):
    """Two CPU processes (torch.distributed on gloo) write exactly the single process's files, each output once,
    with one manifest; a run after an output was lost (as after a kill) writes that one alone, byte for byte."""
    photos = make_photos(tmp_path / "photos")
    targets = tmp_path / "targets.txt"
    targets.write_text("a tiger\n")
    common = ["--targets", targets, "--source", "a photo", "--batch-size", "2", "--method", "ddim"]
    single = launch(photos, "-o", tmp_path / "single", *common, processes=1)
    shared = launch(photos, "-o", tmp_path / "shared", *common, processes=2)
    assert single.returncode == shared.returncode == 0, shared.stderr[-2000:]
    summary = "batch: 4 image(s): 4 edited (4 file(s) written), 0 already done, 0 failed"
    assert shared.stdout.count(summary) == 1 and single.stdout.count(summary) == 1
    ours, theirs = outputs(tmp_path / "shared"), outputs(tmp_path / "single")
    assert ours.keys() == theirs.keys() and len(ours) == 5
    assert all(ours[name].read_bytes() == theirs[name].read_bytes() for name in ours), "not byte-identical"

    lost = ours.pop("p3-png/00-a-tiger.png")  # p3 was inverted with p2 (one size, one batch of 2)
    lost.unlink()
    stamps = {name: path.stat().st_mtime_ns for name, path in ours.items() if name.endswith(".png")}
    resumed = launch(photos, "-o", tmp_path / "shared", *common, processes=2)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "4 image(s): 1 edited (1 file(s) written), 3 already done, 0 failed" in resumed.stdout
    assert lost.read_bytes() == theirs["p3-png/00-a-tiger.png"].read_bytes()  # with p2 again: the same arithmetic
    assert {name: path.stat().st_mtime_ns for name, path in ours.items() if name.endswith(".png")} == stamps
    assert (tmp_path / "shared/manifest.jsonl").read_bytes() == theirs["manifest.jsonl"].read_bytes()
