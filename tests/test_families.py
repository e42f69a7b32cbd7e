"""Every backbone through the public API on tiny random-weight pipelines of its architecture: the family follows
from scheduler and UNet, inversions regenerate, the stock pipeline replays them where the family allows, files
round-trip, LCM-LoRA loads the way users load it, and anything else is a clear error."""

from __future__ import annotations

import pytest
import torch
from conftest import noise_image
from diffusers import (
    DDIMScheduler,
    LatentConsistencyModelPipeline,
    LCMScheduler,
    PNDMScheduler,
    StableDiffusionPipeline,
)
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict
from PIL import Image

import rnri
from rnri.core.chain import sample
from rnri.pipelines import adapter
from rnri.pipelines.loading import RANDOM_MODELS, build_random
from rnri.serialize import load_inversion, save_inversion

FAMILIES = {  # load_pipeline name -> (backbone, stock chain, steps, inversion guidance)
    "tiny": ("lcm", "lcm", 4, 8.5),
    "tiny-sd": ("stable-diffusion", "ddim", 50, 1.0),
    "tiny-sdxl": ("stable-diffusion", "ddim", 50, 1.0),
    "tiny-sd-turbo": ("turbo", "euler", 4, 0.0),
    "tiny-sdxl-turbo": ("turbo", "euler-ancestral", 4, 0.0),
}
FAST = {"tiny-sd": 8, "tiny-sdxl": 8}  # fewer steps where the default (50) is not what a test is about


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One intra-op thread, as for the app tests: on shared 2-vCPU machines two make tiny UNet calls crawl."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request):
    """(name, resident pipeline) of each family."""
    return request.param, rnri.load_pipeline(request.param, device="cpu")


def latents(seed: int = 0, side: int = 8) -> torch.Tensor:
    return torch.randn(1, 4, side, side, generator=torch.Generator().manual_seed(seed))


def stock_latents(pipe, inv: rnri.Inversion, prompt: str, guidance_scale: float) -> torch.Tensor:
    """What the stock pipeline makes from ``inv.latents`` with the inversion's seed (SDXL: at the image's size)."""
    side = {"height": inv.latents.shape[-2] * 8, "width": inv.latents.shape[-1] * 8}
    return pipe(
        prompt,
        latents=inv.latents,
        generator=torch.Generator().manual_seed(inv.seed),
        num_inference_steps=inv.num_inference_steps,
        guidance_scale=guidance_scale,
        output_type="latent",
        **side,
    ).images


def replays(ours: torch.Tensor, stock: torch.Tensor) -> bool:
    """Equal to float32 rounding: within 1e-4 of the latents' scale (50 DDIM steps under CFG 7.5 on random weights
    reach |z| ~ 10 and differ by 2e-4; a wrong coefficient anywhere is off by orders of magnitude more)."""
    return bool((ours - stock).abs().max() <= 1e-4 * stock.abs().max().clamp_min(1.0))


def test_backbone_and_its_defaults_follow_from_scheduler_and_unet(family):
    name, pipe = family
    backbone, chain, steps, guidance = FAMILIES[name]
    assert rnri.backbone_of(pipe).name == backbone
    inv = rnri.invert(pipe, "a cat", latents=latents(), method="ddim", noise_correction=False)
    assert (inv.chain, inv.num_inference_steps, inv.guidance_scale) == (chain, steps, guidance)
    assert len(inv.timesteps) == steps and inv.unet_forwards == steps


def test_stock_pipeline_replays_the_uncorrected_inversion(family):
    """At the backbone's defaults but without noise correction (on by default where the chain injects noise, and
    corrected noises are not the seed's draws; SDXL at 8 steps: tiny-sd runs the 50), regenerating with the source
    prompt is what
    the stock pipeline makes from ``inv.latents`` and the seed; and so is an edit at the backbone's sampling guidance
    (CFG on SD: both branches in one batch)."""
    name, pipe = family
    steps = FAST.get(name) if name == "tiny-sdxl" else None
    inv = rnri.invert(
        pipe, "a red barn", latents=latents(1), seed=11, num_inference_steps=steps, noise_correction=False
    )
    assert inv.seed == 11
    backbone = rnri.backbone_of(pipe)
    for prompt, guidance in (("a red barn", inv.guidance_scale), ("a blue barn", backbone.guidance_scale)):
        ours = rnri.regenerate(pipe, inv, prompt, guidance_scale=guidance, output_type="latent")
        stock = stock_latents(pipe, inv, prompt, guidance)
        assert replays(ours, stock), (prompt, (ours - stock).abs().max())


@pytest.mark.parametrize("method", sorted(rnri.METHODS))
def test_every_method_inverts_every_family_image_in_image_out(family, method):
    name, pipe = family
    image = noise_image(70, 50)
    inv = rnri.invert(pipe, "a cat", image=image, method=method, num_inference_steps=FAST.get(name), resolution=64)
    assert torch.isfinite(inv.latents).all() and len(inv.residuals) == len(inv.timesteps)
    out = rnri.regenerate(pipe, inv, "a dog")
    assert isinstance(out, Image.Image) and out.size == image.size


@pytest.mark.parametrize("guidance", [7.5, 15.0])
def test_no_method_ends_in_nan_on_stable_diffusion_with_the_stock_ddim_scheduler(guidance):
    """Issue 19: SD 1.5 with ``DDIMScheduler`` whose timesteps run 900 to 0 (``steps_offset=0``; SD's
    ``set_alpha_to_one=False``), inverted at a high guidance. Its last step, t = 0 onto ``alphas_cumprod[0]``, adds no
    noise (a prior of variance 0: rnri raised "non-finite latent at timestep 900"). Every method inverts it, every
    step no worse than DDIM's guess, and the result regenerates to finite latents."""
    pipe = rnri.load_pipeline("tiny-sd", device="cpu")
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config, steps_offset=0)
    z0 = latents(9)
    for method in sorted(rnri.METHODS):
        inv = rnri.invert(pipe, "a cat", latents=z0, method=method, num_inference_steps=10, guidance_scale=guidance)
        assert inv.timesteps[0] == 900 and inv.timesteps[-1] == 0
        assert all(torch.isfinite(z).all() for z in inv.trajectory)
        assert isinstance(inv.fallbacks, list) and all(isinstance(line, str) for line in inv.fallbacks)
        assert torch.isfinite(rnri.regenerate(pipe, inv, "a dog", output_type="latent")).all()


@pytest.mark.parametrize("guidance", [0.0, 7.5])
def test_no_method_ends_in_nan_on_sdxl_turbo(guidance):
    """Euler ancestral (the official RNRI code's backbone), at its own guidance and under CFG."""
    pipe = rnri.load_pipeline("tiny-sdxl-turbo", device="cpu")
    for method in sorted(rnri.METHODS):
        inv = rnri.invert(pipe, "a cat", latents=latents(9), method=method, guidance_scale=guidance)
        assert all(torch.isfinite(z).all() for z in inv.trajectory)
        assert torch.isfinite(rnri.regenerate(pipe, inv, "a dog", output_type="latent")).all()


def test_turbo_fits_photos_to_512_pixels():
    pipe = rnri.load_pipeline("tiny-sdxl-turbo", device="cpu")
    inv = rnri.invert(pipe, "a cat", image=noise_image(70, 50), method="ddim")
    assert inv.latents.shape[-1] * 8 == 512 and inv.image_size == (70, 50)


def test_euler_chains_store_the_stock_latents_not_the_unets_input():
    """The stock pipeline starts at ``init_noise_sigma * latents`` and feeds the UNet that over sqrt(1 + sigma^2):
    on trailing schedules the two differ, and ``inv.latents`` is the one ``pipe(latents=...)`` takes."""
    pipe = rnri.load_pipeline("tiny-sdxl-turbo", device="cpu")
    inv = rnri.invert(pipe, "a cat", latents=latents(2), method="ddim")
    sigma = float(pipe.scheduler.sigmas.max())
    assert torch.allclose(inv.trajectory[0], inv.latents * sigma / (1 + sigma**2) ** 0.5, atol=1e-6)
    assert not torch.allclose(inv.trajectory[0], inv.latents, atol=1e-4)


def test_deterministic_chain_of_an_ancestral_scheduler_regenerates_but_is_not_stock():
    pipe = rnri.load_pipeline("tiny-sdxl-turbo", device="cpu")
    inv = rnri.invert(pipe, "a cat", latents=latents(3), chain="euler", noise_correction=True)
    assert inv.chain == "euler" and inv.seed is None
    with torch.no_grad():
        eps_fn = adapter.prompt_eps_fn(pipe, "a cat", inv.guidance_scale, (8, 8))
        replayed = sample(eps_fn, adapter.euler_ancestral_steps(pipe.scheduler, 4), inv.trajectory[0], inv.noises)
    for ours, inverted in zip(replayed[:-1], inv.trajectory[:-1]):  # corrected noises land every non-last step
        assert torch.allclose(ours, inverted, atol=1e-4)


@pytest.mark.parametrize("name", ["tiny-sd", "tiny-sdxl-turbo"])
def test_noise_correction_replays_the_inverted_chain(name):
    pipe = rnri.load_pipeline(name, device="cpu")
    inv = rnri.invert(pipe, "a cat", latents=latents(4), noise_correction=True, num_inference_steps=FAST.get(name))
    assert inv.seed is None and all(n is not None for n in inv.noises[:-1])
    with torch.no_grad():
        steps = adapter.chain_spec(pipe.scheduler, inv.chain).make_steps(pipe.scheduler, inv.num_inference_steps)
        eps_fn = adapter.prompt_eps_fn(pipe, "a cat", inv.guidance_scale, (8, 8))
        replayed = sample(eps_fn, steps, inv.trajectory[0], inv.noises)
    for ours, inverted in zip(replayed[:-1], inv.trajectory[:-1]):
        assert torch.allclose(ours, inverted, atol=1e-4)


def test_noise_correction_on_a_chain_without_noise_is_a_clear_error():
    pipe = rnri.load_pipeline("tiny-sd-turbo", device="cpu")
    with pytest.raises(ValueError, match="injects none"):
        rnri.invert(pipe, "a cat", latents=latents(), noise_correction=True)


def test_local_edits_on_sdxl_carry_its_time_ids():
    pipe = rnri.load_pipeline("tiny-sdxl-turbo", device="cpu")
    inv = rnri.invert(pipe, "a cat", image=noise_image(64, 48), resolution=64)
    mask = rnri.auto_mask(pipe, inv, "a dog")
    assert mask.size == (64, 48)
    assert rnri.regenerate(pipe, inv, "a dog", mask="auto").size == (64, 48)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_inversion_files_round_trip_every_family(name, tmp_path):
    pipe = rnri.load_pipeline(name, device="cpu")
    inv = rnri.invert(pipe, "a cat", image=noise_image(40, 40), num_inference_steps=FAST.get(name), resolution=64)
    save_inversion(inv, tmp_path / "inv.safetensors", model=name)
    loaded = load_inversion(tmp_path / "inv.safetensors")
    assert loaded.chain == inv.chain and loaded.timesteps == inv.timesteps and torch.equal(loaded.latents, inv.latents)
    for prompt in ("a cat", "a dog"):
        ours = rnri.regenerate(pipe, loaded, prompt, output_type="latent")
        assert torch.equal(ours, rnri.regenerate(pipe, inv, prompt, output_type="latent"))


def test_v_prediction_models_replay_exactly():
    """Stable Diffusion 2.x (768) predicts v; the adapter turns it into eps, and the stock pipeline still agrees."""
    pipe = build_random(RANDOM_MODELS["tiny-sd"])
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config, prediction_type="v_prediction")
    pipe.set_progress_bar_config(disable=True)
    inv = rnri.invert(pipe, "a cat", latents=latents(5), num_inference_steps=4)
    for guidance in (1.0, 5.0):
        ours = rnri.regenerate(pipe, inv, "a dog", guidance_scale=guidance, output_type="latent")
        assert replays(ours, stock_latents(pipe, inv, "a dog", guidance))


def test_an_inversion_needs_a_pipeline_whose_scheduler_runs_its_chain():
    turbo = rnri.load_pipeline("tiny-sdxl-turbo", device="cpu")
    inv = rnri.invert(turbo, "a cat", latents=latents(), method="ddim")
    with pytest.raises(ValueError, match="chain must be one of"):
        rnri.regenerate(rnri.load_pipeline("tiny", device="cpu"), inv, "a cat")


def test_an_unsupported_scheduler_is_a_clear_error_naming_the_supported_ones():
    pipe = build_random(RANDOM_MODELS["tiny-sd"])
    pipe.scheduler = PNDMScheduler.from_config(pipe.scheduler.config)  # what SD 1.5 ships
    with pytest.raises(ValueError, match="PNDMScheduler") as error:
        rnri.invert(pipe, "a cat", latents=latents())
    assert "DDIMScheduler" in str(error.value) and "EulerAncestralDiscreteScheduler" in str(error.value)


def test_an_unsupported_pipeline_is_a_clear_error():
    with pytest.raises(ValueError, match="StableDiffusionXLPipeline"):
        rnri.invert(object(), "a cat", latents=latents())


def test_an_lcm_pipeline_holding_an_lcm_lora_unet_guides_by_cfg():
    """The stock LatentConsistencyModelPipeline fails on a UNet without a guidance embedding (a bare TypeError in
    its guidance embedding); rnri takes such a pipeline as LCM-LoRA and guides it classifier-free, as the stock
    StableDiffusionPipeline with LCMScheduler does."""
    sd = build_random(RANDOM_MODELS["tiny-sd"])
    lcm = LatentConsistencyModelPipeline(**{k: v for k, v in sd.components.items() if k != "image_encoder"})
    lcm.scheduler = LCMScheduler.from_config(sd.scheduler.config)
    lcm.set_progress_bar_config(disable=True)
    assert rnri.backbone_of(lcm).name == "lcm-lora"
    inv = rnri.invert(lcm, "a cat", latents=latents(6), guidance_scale=2.0, seed=3, noise_correction=False)
    stock = StableDiffusionPipeline(**sd.components)
    stock.scheduler = lcm.scheduler
    stock.set_progress_bar_config(disable=True)
    ours = rnri.regenerate(lcm, inv, "a cat", output_type="latent")
    assert replays(ours, stock_latents(stock, inv, "a cat", 2.0))


@pytest.fixture(scope="module")
def model_folders(tmp_path_factory):
    """A tiny SD 1.5 saved as Stable Diffusion ships (PNDMScheduler, safetensors), an LCM-LoRA for it saved by
    diffusers' own ``save_lora_weights``, and a tiny SDXL-Turbo: folders, as a Hub snapshot would be."""
    root = tmp_path_factory.mktemp("models")
    sd = build_random(RANDOM_MODELS["tiny-sd"], seed=1)
    sd.scheduler = PNDMScheduler.from_config(sd.scheduler.config)
    sd.save_pretrained(root / "sd15", safe_serialization=True)
    unet = build_random(RANDOM_MODELS["tiny-sd"], seed=1).unet
    lora = LoraConfig(r=4, lora_alpha=4, init_lora_weights=False, target_modules=["to_q", "to_k", "to_v", "to_out.0"])
    unet.add_adapter(lora)
    unet_lora = get_peft_model_state_dict(unet)
    StableDiffusionPipeline.save_lora_weights(root / "lcm-lora", unet_lora_layers=unet_lora, safe_serialization=True)
    build_random(RANDOM_MODELS["tiny-sdxl-turbo"]).save_pretrained(root / "sdxl-turbo", safe_serialization=True)
    return root, unet


def test_a_stable_diffusion_folder_loads_with_ddim(model_folders):
    root, _ = model_folders
    pipe = rnri.load_pipeline(str(root / "sd15"), device="cpu")
    assert isinstance(pipe, StableDiffusionPipeline) and isinstance(pipe.scheduler, DDIMScheduler)
    assert rnri.backbone_of(pipe).name == "stable-diffusion"
    turbo = rnri.load_pipeline(str(root / "sdxl-turbo"), device="cpu")
    assert rnri.backbone_of(turbo).name == "turbo" and type(turbo.scheduler).__name__.startswith("EulerAncestral")


def test_lcm_lora_loads_the_way_users_load_it(model_folders):
    """``load_pipeline(model, lora=...)``: LCMScheduler on the model's noise schedule, the LoRA fused into the UNet
    (its outputs are the LoRA-adapted UNet's), guidance classifier-free; the stock pipeline replays it."""
    root, lora_unet = model_folders
    base = rnri.load_pipeline(str(root / "sd15"), device="cpu")
    pipe = rnri.load_pipeline(str(root / "sd15"), device="cpu", lora=str(root / "lcm-lora"))
    assert pipe is not base and isinstance(pipe.scheduler, LCMScheduler)
    assert rnri.backbone_of(pipe).name == "lcm-lora"
    z, text = latents(7), adapter.encode_prompt(pipe, "a cat")
    with torch.no_grad():
        fused, adapted, plain = (u(z, 500, encoder_hidden_states=text)[0] for u in (pipe.unet, lora_unet, base.unet))
    assert torch.allclose(fused, adapted, atol=1e-5) and not torch.allclose(fused, plain, atol=1e-3)
    inv = rnri.invert(pipe, "a cat", latents=z, seed=2, noise_correction=False)  # replayable from the seed
    assert (inv.chain, inv.num_inference_steps, inv.guidance_scale, inv.seed) == ("lcm", 4, 1.0, 2)
    ours = rnri.regenerate(pipe, inv, "a cat", output_type="latent")
    assert replays(ours, stock_latents(pipe, inv, "a cat", 1.0))


def test_a_lora_that_cannot_be_loaded_is_a_model_load_error(model_folders, tmp_path):
    root, _ = model_folders
    with pytest.raises(rnri.ModelLoadError, match="could not load the LoRA"):
        rnri.load_pipeline(str(root / "sd15"), device="cpu", lora=str(tmp_path))
