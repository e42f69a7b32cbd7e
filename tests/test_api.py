"""The public API on the tiny LCM pipeline: image in, image out, stock replay, and every bad argument."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from conftest import noise_image
from PIL import Image

import rnri
from rnri.pipelines import adapter
from rnri.pipelines.loading import random_tiny_pipeline


def test_image_in_same_size_image_out(pipe, image):
    inv = rnri.invert(pipe, "a photo of a cat", image=image)
    out = rnri.regenerate(pipe, inv, "a photo of a dog")
    assert isinstance(out, Image.Image) and out.size == image.size and out.mode == "RGB"
    f = pipe.vae_scale_factor  # 70x50 fitted to 64 on the long side, each side a whole number of latent cells
    assert inv.latents.shape == (1, 4, round(64 * 50 / 70 / f), 64 // f)


def test_stock_pipeline_replays_the_inversion(pipe, image):
    inv = rnri.invert(pipe, "a red barn", image=image, seed=11, noise_correction=False)
    ours = rnri.regenerate(pipe, inv, "a red barn", output_type="latent")
    stock = pipe(
        "a red barn",
        latents=inv.latents,
        generator=torch.Generator().manual_seed(inv.seed),
        num_inference_steps=4,
        guidance_scale=inv.guidance_scale,
        output_type="latent",
    ).images
    assert torch.allclose(ours, stock, atol=1e-5)


@pytest.mark.parametrize("method", sorted(rnri.METHODS))
def test_every_method_runs_and_counts_unet_calls(pipe, image, method):
    inv = rnri.invert(pipe, "a cat", image=image, method=method)
    assert inv.method == method and len(inv.residuals) == 4 and len(inv.trajectory) == 5
    assert inv.unet_forwards >= 4 and torch.isfinite(inv.latents).all()
    assert inv.unet_backwards == (8 if method == "gnri" else 0)  # gnri: Eq. 10's gradient, 2 per step


# z_T's step starts from the DDIM guess; the guard adds DDIM's guess and its residual on the 3 other steps
@pytest.mark.parametrize("derivative, counts", [("difference", (19, 0)), ("autograd", (15, 4))])
def test_rnri_cost_counted_by_hooks(pipe, image, derivative, counts):
    inv = rnri.invert(pipe, "a cat", image=image, method="rnri", derivative=derivative)
    assert (inv.unet_forwards, inv.unet_backwards) == counts


def test_regenerate_with_source_prompt_follows_the_inverted_chain(pipe):
    """With noise correction every non-last step is replayed exactly: the chain hits the inverted latents."""
    inv = rnri.invert(pipe, "a cat", image=noise_image(64, 64, seed=2), noise_correction=True)
    assert inv.seed is None  # corrected noises are not the stock draws
    clean = rnri.regenerate(pipe, inv, "a cat", output_type="latent")
    eps_fn = adapter.unet_eps_fn(pipe, adapter.encode_prompt(pipe, "a cat"), adapter.guidance_embedding(pipe, 8.5))
    steps = adapter.lcm_steps(pipe.scheduler, 4)
    from rnri.core.chain import sample

    with torch.no_grad():
        trajectory = sample(eps_fn, steps, inv.latents, inv.noises)
    for ours, inverted in zip(trajectory[:-1], inv.trajectory[:-1]):
        assert torch.allclose(ours, inverted, atol=1e-4)
    assert torch.equal(trajectory[-1], clean)


def test_strength_inverts_only_the_last_steps(pipe, image):
    inv = rnri.invert(pipe, "a cat", image=image, strength=0.5)
    assert inv.timesteps == [499, 259] and inv.start_step == 2 and inv.seed is None
    assert rnri.regenerate(pipe, inv, "a dog").size == image.size


def test_latents_input_and_latent_output(pipe):
    z0 = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    inv = rnri.invert(pipe, "a cat", latents=z0, method="ddim")
    assert inv.image_size is None
    assert rnri.regenerate(pipe, inv, "a cat", output_type="latent").shape == (1, 4, 8, 8)
    assert rnri.regenerate(pipe, inv, "a cat").size == (8 * pipe.vae_scale_factor,) * 2


def test_an_inversion_from_another_device_is_moved_to_the_pipeline(pipe):
    z0 = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    inv = rnri.invert(pipe, "a cat", latents=z0, method="ddim")
    elsewhere = rnri.api.on_device(inv, "meta")  # as if saved on a GPU and loaded here
    assert {z.device.type for z in [elsewhere.latents, *elsewhere.trajectory]} == {"meta"}
    assert all(n is None or n.device.type == "meta" for n in elsewhere.noises)
    assert rnri.api.on_device(inv, "cpu") is inv  # nothing to move: no copy


def test_deterministic_chain(pipe, image):
    inv = rnri.invert(pipe, "a cat", image=image, chain="ddim")
    assert all(n is None for n in inv.noises) and inv.seed is None


def test_progress_callback_once_per_step(pipe, image):
    calls = []
    rnri.invert(pipe, "a cat", image=image, callback=lambda done, total, res: calls.append((done, total)))
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]


def test_prompt_embeddings_are_cached(pipe, monkeypatch):
    calls = []
    original = pipe.encode_prompt
    monkeypatch.setattr(pipe, "encode_prompt", lambda *a, **k: calls.append(a[0]) or original(*a, **k))
    first = adapter.encode_prompt(pipe, "a cached prompt")
    second = adapter.encode_prompt(pipe, "a cached prompt")
    assert calls == ["a cached prompt"] and first is second


@pytest.mark.parametrize("mode", ["RGBA", "LA", "L", "P", "CMYK", "1", "I;16"])
def test_any_image_mode(pipe, mode):
    image = noise_image(40, 24, mode="RGB" if mode == "I;16" else mode)
    if mode == "I;16":
        image = Image.fromarray((np.arange(40 * 24).reshape(24, 40) * 60).astype(np.uint16))
    out = rnri.regenerate(pipe, rnri.invert(pipe, "a cat", image=image, method="ddim"), "a cat")
    assert out.size == (40, 24)


def test_overlong_prompt_warns_and_works(pipe, image):
    with pytest.warns(UserWarning, match="longer than the text encoder takes"):
        rnri.invert(pipe, "a cat " * 100, image=image, method="ddim")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "exactly one of image= or latents="),
        ({"image": "both", "latents": torch.zeros(1, 4, 8, 8)}, "exactly one of image= or latents="),
        ({"latents": torch.zeros(4, 8, 8)}, r"shape \(1, 4, h, w\)"),
        ({"latents": torch.zeros(1, 3, 8, 8)}, r"shape \(1, 4, h, w\)"),
        ({"latents": torch.full((1, 4, 8, 8), float("nan"))}, "NaN or infinite"),
        ({"image": np.zeros((8, 8, 3))}, "must be a PIL image"),
        ({"latents": torch.zeros(1, 4, 8, 8), "method": "newton"}, "unknown inversion method"),
        ({"latents": torch.zeros(1, 4, 8, 8), "method": "rnri", "iterations": 0}, "iterations must be at least 1"),
        ({"latents": torch.zeros(1, 4, 8, 8), "method": "ddim", "iterations": 2}, "takes no option"),
        ({"latents": torch.zeros(1, 4, 8, 8), "strength": 0.0}, "strength"),
        ({"latents": torch.zeros(1, 4, 8, 8), "chain": "euler"}, "chain"),
        ({"latents": torch.zeros(1, 4, 8, 8), "num_inference_steps": 0}, "num_inference_steps"),
        ({"latents": torch.zeros(1, 4, 8, 8), "guidance_scale": float("nan")}, "guidance_scale"),
    ],
)
def test_bad_arguments_are_value_errors(pipe, kwargs, message):
    with pytest.raises(ValueError, match=message):
        rnri.invert(pipe, "a cat", **kwargs)


def test_a_prompt_must_be_a_string(pipe):
    with pytest.raises(ValueError, match="prompt must be a string, or a non-empty list of them for a batch; got None"):
        rnri.invert(pipe, None, latents=torch.zeros(1, 4, 8, 8))


@pytest.mark.parametrize("prompt", ["", "   "])
def test_an_empty_source_prompt_inverts_unconditionally_and_replays(pipe, prompt):
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    inv = rnri.invert(pipe, prompt, latents=latents, method="ddim")
    again = rnri.regenerate(pipe, inv, prompt, output_type="latent")
    unconditional = rnri.regenerate(pipe, inv, "", output_type="latent")
    assert torch.isfinite(again).all() and torch.equal(again, unconditional)  # blank is the empty prompt


def test_regenerate_rejects_bad_output_type_and_foreign_schedule(pipe):
    inv = rnri.invert(pipe, "a cat", latents=torch.randn(1, 4, 8, 8), method="ddim")
    with pytest.raises(ValueError, match="output_type"):
        rnri.regenerate(pipe, inv, "a cat", output_type="np")
    inv.timesteps = [900, 600, 300, 100]
    with pytest.raises(ValueError, match="timesteps"):
        rnri.regenerate(pipe, inv, "a cat")


def test_pipeline_is_resident(pipe):
    assert rnri.load_pipeline("tiny", device="cpu") is pipe


def test_unloadable_model_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(rnri.ModelLoadError) as error:
        rnri.load_pipeline("no-such-user/no-such-model", device="cpu")
    message = str(error.value)
    assert "no-such-user/no-such-model" in message and "model='tiny'" in message and "local folder" in message
    with pytest.raises(rnri.ModelLoadError, match="local folder"):
        rnri.load_pipeline(str(tmp_path), device="cpu")


def test_random_tiny_model_is_deterministic():
    a, b = random_tiny_pipeline(seed=0), random_tiny_pipeline(seed=0)
    for (name, p), (_, q) in zip(a.unet.named_parameters(), b.unet.named_parameters()):
        assert torch.equal(p, q), name
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert a.tokenizer("a cat").input_ids[0] == a.tokenizer.bos_token_id


def test_exif_rotation_is_applied(pipe):
    """A portrait photo stored landscape with EXIF orientation 6 comes back upright, at its upright size."""
    stored = noise_image(60, 40)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    import io

    buffer = io.BytesIO()
    stored.save(buffer, "JPEG", exif=exif)
    photo = Image.open(io.BytesIO(buffer.getvalue()))
    inv = rnri.invert(pipe, "a cat", image=photo, method="ddim")
    assert inv.image_size == (40, 60) and inv.source_image.size == (40, 60)
    assert rnri.regenerate(pipe, inv, "a cat").size == (40, 60)
