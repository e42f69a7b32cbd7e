"""The LEdits++ peer on tiny random-weight Stable Diffusion pipelines: it inverts and edits, its cost is counted,
and the pipeline it borrows is handed back as it was."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import noise_image

import rnri
from rnri.pipelines.loading import RANDOM_MODELS, build_random
from rnri_lab.bench.ledits import LEditsConfig, ledits_edit

CONFIG = LEditsConfig(num_inversion_steps=6, resolution=128)  # 128 px: LEdits++'s attention masks need 1/4 maps


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def sd():
    pipe = build_random(RANDOM_MODELS["tiny-sd"])
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_ledits_inverts_and_edits_a_photo_and_counts_its_unet_calls(sd):
    photo = noise_image(70, 50)
    edit = ledits_edit(sd, photo, "a photo of a cat", "a photo of a tiger", CONFIG)
    assert edit.image.size == photo.size and edit.image.mode == "RGB"
    # inversion: an unconditional and a source-prompt call per step (CFG at 3.5); edit: one batch per step
    assert (edit.invert_calls.forwards, edit.edit_calls.forwards) == (12, 6) and edit.unet_calls == 18
    assert edit.invert_seconds > 0 and edit.edit_seconds > 0
    again = ledits_edit(sd, photo, "a photo of a cat", "a photo of a tiger", CONFIG)
    assert np.array_equal(np.asarray(again.image), np.asarray(edit.image))  # seeded
    same = ledits_edit(sd, photo, "a photo of a cat", None, CONFIG)
    assert not np.array_equal(np.asarray(same.image), np.asarray(edit.image))


def test_the_borrowed_pipeline_is_left_as_it_was(sd):
    """LEdits++ installs its own attention processors and scheduler settings; rnri's chain is unchanged after it."""
    processors = {name: type(p) for name, p in sd.unet.attn_processors.items()}
    z0 = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    before = rnri.invert(sd, "a cat", latents=z0, method="ddim", num_inference_steps=5)
    ledits_edit(sd, noise_image(64, 64), "a cat", "a dog", CONFIG)
    assert {name: type(p) for name, p in sd.unet.attn_processors.items()} == processors
    after = rnri.invert(sd, "a cat", latents=z0, method="ddim", num_inference_steps=5)
    assert after.timesteps == before.timesteps and torch.allclose(after.latents, before.latents, atol=1e-6)


def test_the_xl_variant_runs_on_sdxl():
    pipe = build_random(RANDOM_MODELS["tiny-sdxl"])
    pipe.set_progress_bar_config(disable=True)
    edit = ledits_edit(pipe, noise_image(70, 50), "a cat", "a tiger", CONFIG)
    assert edit.image.size == (70, 50) and edit.edit_calls.forwards == 6


def test_ledits_refuses_pipelines_it_does_not_run_on():
    with pytest.raises(ValueError, match="StableDiffusionPipeline"):
        ledits_edit(rnri.load_pipeline("tiny", device="cpu"), noise_image(64, 64), "a cat", "a dog", CONFIG)
