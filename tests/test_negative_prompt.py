"""A negative prompt takes the empty prompt's place in classifier-free guidance's unconditional branch of an edit:
as the stock pipeline applies it on the CFG backbones (Stable Diffusion, SDXL with its pooled embedding, the shapes
teacher), and refused with the reason where the edit runs no CFG (an LCM's guidance embedding, Turbo at 0)."""

from __future__ import annotations

import pytest
import torch
from test_families import latents, replays

import rnri
from rnri.pipelines import adapter

STEPS = 8  # the chain's length is not what these tests are about


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def stock_edit(pipe, inv: rnri.Inversion, prompt: str, negative_prompt: str | None, guidance: float) -> torch.Tensor:
    side = {"height": inv.latents.shape[-2] * 8, "width": inv.latents.shape[-1] * 8}
    return pipe(
        prompt,
        negative_prompt=negative_prompt,
        latents=inv.latents,
        num_inference_steps=inv.num_inference_steps,
        guidance_scale=guidance,
        output_type="latent",
        **side,
    ).images


@pytest.mark.parametrize("name", ["tiny-sd", "tiny-sdxl"])
def test_the_negative_prompt_is_the_stock_pipelines_unconditional_branch(name):
    pipe = rnri.load_pipeline(name, device="cpu")
    inv = rnri.invert(pipe, "a red barn", latents=latents(2), num_inference_steps=STEPS, method="ddim")
    edit = dict(guidance_scale=rnri.default_guidance(pipe, edit=True), output_type="latent")
    ours = rnri.regenerate(pipe, inv, "a blue barn", negative_prompt="red", **edit)
    plain = rnri.regenerate(pipe, inv, "a blue barn", **edit)
    assert replays(ours, stock_edit(pipe, inv, "a blue barn", "red", edit["guidance_scale"]))
    assert not replays(ours, plain)  # it changed the edit
    empty = rnri.regenerate(pipe, inv, "a blue barn", negative_prompt="", **edit)
    assert torch.equal(empty, plain)  # "" is the stock empty branch (zeros on SDXL), as no negative prompt


def test_the_unconditional_half_of_the_batch_holds_the_negative_prompt():
    pipe = rnri.load_pipeline("tiny-teacher", device="cpu")
    cond = adapter.conditioning(pipe, "a large blue circle on a gray background", 7.5, (8, 8), negative_prompt="red")
    assert cond.cfg_scale == 7.5
    assert torch.equal(cond.text[:1], adapter.encode_prompt(pipe, "red"))
    assert torch.equal(cond.text[1:], adapter.encode_prompt(pipe, "a large blue circle on a gray background"))


def test_a_negative_prompt_steers_the_teachers_edit_also_under_a_mask(image):
    pipe = rnri.load_pipeline("tiny-teacher", device="cpu")
    photo = image.resize((64, 64))
    inv = rnri.invert(pipe, "a small red circle on a gray background", image=photo, method="ddim",
                      num_inference_steps=STEPS)  # fmt: skip
    target = "a small blue circle on a gray background"
    mask = torch.zeros(64, 64)
    mask[16:48, 16:48] = 1
    for where in (None, mask):
        plain = rnri.regenerate(pipe, inv, target, guidance_scale=7.5, mask=where, output_type="latent")
        steered = rnri.regenerate(
            pipe, inv, target, guidance_scale=7.5, negative_prompt="red", mask=where, output_type="latent"
        )
        assert (plain - steered)[..., 3:5, 3:5].abs().max() > 1e-3  # the middle of the mask: steered differently


@pytest.mark.parametrize(
    "name, guidance, words",
    [
        ("tiny", None, "takes its guidance as an embedding"),
        ("tiny-sd-turbo", None, "edits at 0"),
        ("tiny-teacher", 1.0, "edits at 1"),
    ],
)
def test_without_cfg_a_negative_prompt_is_refused_with_the_reason(name, guidance, words):
    pipe = rnri.load_pipeline(name, device="cpu")
    support = rnri.negative_prompt_support(pipe, guidance)
    assert not support.applies and words in support.reason and "classifier-free guidance" in support.reason
    inv = rnri.invert(pipe, "a cat", latents=latents(3), method="ddim", num_inference_steps=2)
    with pytest.raises(ValueError, match=words):
        rnri.regenerate(pipe, inv, "a dog", guidance_scale=guidance, negative_prompt="cat")
    rnri.regenerate(pipe, inv, "a dog", guidance_scale=guidance, negative_prompt="")  # none asked: no refusal


def test_where_cfg_runs_the_negative_prompt_applies():
    pipe = rnri.load_pipeline("tiny-teacher", device="cpu")
    assert rnri.negative_prompt_support(pipe) == rnri.negative_prompt_support(pipe, 7.5)
    assert rnri.negative_prompt_support(pipe).applies and not rnri.negative_prompt_support(pipe).reason


def test_a_batch_takes_one_negative_prompt_for_every_item():
    pipe = rnri.load_pipeline("tiny-sd", device="cpu")
    invs = rnri.invert(pipe, ["a cat", "a dog"], latents=torch.cat([latents(4), latents(5)]), method="ddim",
                       num_inference_steps=STEPS)  # fmt: skip
    both = rnri.regenerate(pipe, invs, ["a fox", "a cow"], guidance_scale=7.5, negative_prompt="blurry",
                           output_type="latent")  # fmt: skip
    one = rnri.regenerate(pipe, invs[1], "a cow", guidance_scale=7.5, negative_prompt="blurry", output_type="latent")
    assert replays(both[1:], one)  # to float rounding: a batch's matrix products sum in another order
    assert not replays(both, rnri.regenerate(pipe, invs, ["a fox", "a cow"], guidance_scale=7.5, output_type="latent"))
