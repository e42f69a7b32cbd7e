"""Attention control and several directions: the math on known tensors, then the tiny pipeline end to end."""

from __future__ import annotations

import dataclasses
import threading

import pytest
import torch
import torch.nn.functional as F
from conftest import noise_image
from diffusers.models.attention_processor import AttnProcessor

import rnri
from rnri.core.chain import sample
from rnri.core.counting import count_unet_calls
from rnri.core.directions import Direction, Directions, combine, implicit_mask
from rnri.pipelines import adapter
from rnri.pipelines.attention import (
    AttentionControl,
    ControlState,
    attention_maps,
    controlled_attention,
    inject_keys_values,
    inject_maps,
    layer_grid,
    refine,
    refine_maps,
    replace,
    step_count,
)
from rnri.pipelines.control import LocalBlend, edit_chain, word_region
from rnri.shapes.render import render
from rnri_lab.bench.ledits import SHAPEEDIT, ledits_invert, ledits_pipeline, ledits_words
from rnri_lab.bench.removal import removals, score
from rnri_lab.bench.shapes import CONTROL, phrases, run
from rnri_lab.shapes.edits import shape_edit

S, E = 100, 101  # start and end (= padding) tokens of the toy prompts

# --- token alignment ---------------------------------------------------------------------------------------------


def test_refine_maps_shared_tokens_and_names_the_swapped_word():
    a = refine([S, 1, 2, 3, E, E, E], [S, 1, 9, 3, E, E, E])
    assert a.mapped == (True, True, False, True, True, True, True)
    assert a.source_index[3] == 3 and a.edited_source == (2,) and a.edited_target == (2,)


def test_replace_also_maps_a_swapped_word_of_equal_length():
    a = replace([S, 1, 2, 3, E, E, E], [S, 1, 9, 3, E, E, E])
    assert all(a.mapped) and a.source_index[2] == 2 and a.edited_target == (2,)
    longer = replace([S, 1, 2, 3, E, E, E], [S, 1, 8, 9, 3, E, E])  # one token swapped for two: not mapped
    assert longer.mapped[2:4] == (False, False) and longer.edited_target == (2, 3)


def test_an_inserted_word_shifts_the_alignment_and_the_padding():
    a = refine([S, 1, 2, E, E, E], [S, 1, 7, 2, E, E])
    assert a.source_index[:5] == (0, 1, 2, 2, 3) and a.mapped[:5] == (True, True, False, True, True)
    assert a.source_index[5] == 4 and a.mapped[5]  # the target's first padding takes the source's first padding
    assert a.edited_source == () and a.edited_target == (2,)


def test_prompts_of_different_padded_length_are_refused():
    with pytest.raises(ValueError, match="same length"):
        refine([S, 1, E], [S, 1, E, E])


# --- the attention math ------------------------------------------------------------------------------------------


def qkv(batch=2, heads=2, n=6, m=6, d=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, heads, x, d, generator=g) for x in (n, m, m))


def test_attention_maps_are_what_sdpa_computes():
    q, k, v = qkv()
    assert torch.allclose(attention_maps(q, k) @ v, F.scaled_dot_product_attention(q, k, v), atol=1e-6)


def test_self_injection_of_maps_keeps_each_branch_values():
    q, k, v = qkv(batch=3)
    out = inject_maps(q, k, v, None)
    source_maps = attention_maps(q[:1], k[:1])
    assert torch.allclose(out[2], (source_maps @ v[2:3])[0], atol=1e-6)
    assert torch.allclose(out[0], F.scaled_dot_product_attention(q, k, v)[0], atol=1e-6)


def test_self_injection_of_keys_and_values_reads_the_source():
    q, k, v = qkv(batch=3)
    out = inject_keys_values(q, k, v, None)
    assert torch.allclose(out[1], F.scaled_dot_product_attention(q[1:2], k[:1], v[:1])[0], atol=1e-6)


def test_refined_maps_take_mapped_columns_from_the_source_on_the_edit_branch_only():
    maps = torch.rand(3, 2, 5, 4)
    index, mapped = torch.tensor([0, 2, 1, 3]), torch.tensor([True, False, True, True])
    out = refine_maps(maps, index, mapped)
    assert torch.equal(out[0], maps[0]) and torch.equal(out[2], maps[2])
    assert torch.equal(out[1, ..., 1], maps[1, ..., 1])  # a new word keeps its own map
    assert torch.equal(out[1, ..., 2], maps[0, ..., 1]) and torch.equal(out[1, ..., 3], maps[0, ..., 3])


@pytest.mark.parametrize(
    ("queries", "latent", "grid"),
    [(256, (16, 16), (16, 16)), (64, (16, 16), (8, 8)), (12, (6, 8), (3, 4)), (6, (3, 5), (2, 3)), (7, (8, 8), None)],
)
def test_layer_grid(queries, latent, grid):
    assert layer_grid(queries, latent) == grid


def test_step_counts_and_the_plan_per_step():
    assert [step_count(f, 4) for f in (0.0, 0.25, 0.5, 0.75, 1.0)] == [0, 1, 2, 3, 4]
    assert step_count(0.5, 3) == 2
    state = ControlState(
        AttentionControl(self_fraction=0.5, cross_fraction=0.75), refine([S, E], [S, E]), 2, (8, 8), False
    )
    plan = []
    for i in range(4):
        state.begin_step(i, 4)
        plan.append((state.inject_self, state.replace_cross))
    assert plan == [(True, True), (True, True), (False, True), (False, False)]


@pytest.mark.parametrize(
    ("field", "value"),
    [("self_fraction", 1.5), ("cross_fraction", -0.1), ("blend_threshold", 1.0), ("blend_dilation", -1)],
)
def test_bad_control_settings_are_value_errors(field, value):
    with pytest.raises(ValueError, match=field):
        AttentionControl(**{field: value})


def test_word_region_thresholds_the_edited_words_map():
    maps = torch.zeros(4, 6, 6)
    maps[2, 1, 1], maps[2, 4, 4], maps[3, 4, 4] = 1.0, 0.2, 0.2  # word 2 strongly at (1, 1), words 2+3 at (4, 4)
    region = word_region(maps, [2, 3], threshold=0.3, dilation=0)[0, 0]
    assert region[1, 1] == 1 and region[4, 4] == 1 and region.sum() == 2
    assert word_region(maps, [2], threshold=0.3, dilation=1)[0, 0].sum() == 9  # (1, 1) grown by one cell
    assert word_region(maps, [], 0.3, 1).sum() == 0


def test_local_blend_is_the_union_of_removed_and_added_words_and_waits_for_its_start():
    alignment = refine([S, 1, 2, E], [S, 1, 9, E])  # word 2 swapped for 9 at position 2
    maps = torch.zeros(2, 4, 6, 6)
    maps[0, 2, 0, 0], maps[1, 2, 5, 5] = 1.0, 1.0
    blend = LocalBlend(AttentionControl(blend_dilation=0, blend_start=0.5), alignment, steps=4, edit=1)
    assert blend(0, maps) is None and blend(1, None) is None
    region = blend(2, None)[0, 0]  # maps accumulated over the steps so far
    assert region[0, 0] == 1 and region[5, 5] == 1 and region.sum() == 2
    unchanged = LocalBlend(AttentionControl(), refine([S, 1, E], [S, 1, E]), steps=4, edit=1)
    assert unchanged(0, maps) is None  # nothing edited: nothing to localise


# --- directions --------------------------------------------------------------------------------------------------


def test_one_direction_against_the_prompt_is_the_plain_edit():
    base, target = torch.randn(1, 4, 3, 3), torch.randn(1, 4, 3, 3)
    assert torch.allclose(combine(base, target, base, torch.tensor([1.0]), None), target, atol=1e-6)
    assert torch.allclose(combine(base, target, base, torch.tensor([-1.0]), None), 2 * base - target, atol=1e-6)


def test_directions_add_up_where_their_masks_are():
    base, ref = torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2)
    terms = torch.ones(2, 1, 2, 2)
    masks = torch.tensor([[1.0, 0.0], [0.0, 0.0]]).expand(2, 1, 2, 2).clone()
    masks[1, 0, 1, 1] = 1.0
    out = combine(base, terms, ref, torch.tensor([2.0, -0.5]), masks)[0, 0]
    assert out.tolist() == [[1.5, 0.0], [0.0, -0.5]]


def test_implicit_mask_intersects_attention_and_noise_quantiles():
    attention = torch.arange(16.0).view(4, 4)  # highest at the bottom rows
    difference = torch.full((1, 4, 4, 4), 0.5)
    difference[..., 0] = -1.0  # largest in magnitude in the left column
    mask = implicit_mask(attention, difference, threshold=0.75)[0, 0]
    assert mask[3, 0] == 1 and mask.sum() == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"terms": ()}, "at least one"),
        ({"terms": (Direction(" "),)}, "non-empty"),
        ({"terms": (Direction("a", float("nan")),)}, "finite"),
        ({"terms": (Direction("a"),), "threshold": 1.0}, "threshold"),
        ({"terms": (Direction("a"),), "warmup": 2.0}, "warmup"),
    ],
)
def test_bad_directions_are_value_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Directions(**kwargs)


# --- on the tiny pipeline ----------------------------------------------------------------------------------------

CONTROLS = {
    "default": AttentionControl(),
    "no local blend": AttentionControl(local_blend=False),
    "keys and values, word swap, all steps": AttentionControl(
        self_fraction=1.0, cross_fraction=1.0, inject=inject_keys_values, align=replace
    ),
}


@pytest.fixture(scope="module")
def exact(pipe):
    """An inversion whose trajectory is exactly the chain the source prompt replays (noise correction gets every
    step but the last; the last latent is taken from the replay), so control must not change the reconstruction."""
    inv = rnri.invert(pipe, "a cat", image=noise_image(64, 64, seed=2), noise_correction=True)
    eps_fn = adapter.unet_eps_fn(pipe, adapter.encode_prompt(pipe, "a cat"), adapter.guidance_embedding(pipe, 8.5))
    with torch.no_grad():
        replay = sample(eps_fn, adapter.lcm_steps(pipe.scheduler, 4), inv.latents, inv.noises)
    return dataclasses.replace(inv, trajectory=replay)


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def one_step(pipe, inv, k: int, prompt: str, control: AttentionControl) -> tuple[torch.Tensor, torch.Tensor]:
    """Step ``k`` of the chain from the inverted latent z_k, with and without control: no chain amplifies the
    float noise of batching (the random-weight chain turns 1e-6 at z_T into 4e-3 at the end)."""
    steps = adapter.lcm_steps(pipe.scheduler, 4)[k : k + 1]
    w_emb = adapter.guidance_embedding(pipe, 8.5)
    source, noises = inv.trajectory[k : k + 2], inv.noises[k : k + 1]
    controlled = edit_chain(pipe, steps, source, noises, ("a cat", prompt), w_emb, control, None, None)[-1]
    eps_fn = adapter.unet_eps_fn(pipe, adapter.encode_prompt(pipe, prompt), w_emb)
    with torch.no_grad():
        plain = sample(eps_fn, steps, source[0], noises)[-1]
    return controlled, plain


@pytest.mark.parametrize("k", [0, 3])
@pytest.mark.parametrize("name", list(CONTROLS))
def test_control_on_and_off_agree_on_a_step_when_target_is_source(pipe, exact, name, k):
    on, off = one_step(pipe, exact, k, "a cat", CONTROLS[name])
    assert relative(on, off) < 1e-5


@pytest.mark.parametrize("name", list(CONTROLS))
def test_control_changes_an_edit_step(pipe, exact, name):
    on, off = one_step(pipe, exact, 0, "a dog", CONTROLS[name])
    assert relative(on, off) > 1e-3


@pytest.mark.parametrize("name", list(CONTROLS))
def test_control_on_and_off_reconstruct_alike_when_target_is_source(pipe, exact, name):
    """The whole chain: alike up to the float noise of batching, which this random-weight chain amplifies ~4000x."""
    off = rnri.regenerate(pipe, exact, "a cat", output_type="latent")
    on = rnri.regenerate(pipe, exact, "a cat", output_type="latent", control=CONTROLS[name])
    assert relative(on, off) < 1e-2


def batch_sizes(pipe, **kwargs) -> list[int]:
    sizes = []
    handle = pipe.unet.register_forward_pre_hook(lambda module, args: sizes.append(args[0].shape[0]))
    try:
        rnri.regenerate(pipe, kwargs.pop("inv"), "a dog", output_type="latent", **kwargs)
    finally:
        handle.remove()
    return sizes


def test_one_batched_unet_call_per_step(pipe, exact):
    assert batch_sizes(pipe, inv=exact) == [1] * 4
    assert batch_sizes(pipe, inv=exact, control=AttentionControl()) == [2] * 4  # source and edit
    directions = Directions((Direction("dog", 2.0), Direction("cat", -1.0)))  # + 2 directions + the reference ""
    assert batch_sizes(pipe, inv=exact, control=AttentionControl(), directions=directions) == [5] * 4
    assert batch_sizes(pipe, inv=exact, directions=Directions((Direction("a dog"),), reference=None)) == [2] * 4
    with count_unet_calls(pipe.unet) as calls:
        rnri.regenerate(pipe, exact, "a dog", output_type="latent", control=AttentionControl())
    assert (calls.forwards, calls.backwards, calls.items) == (4, 0, 8)  # 4 calls of a batch of two


def stock_of(unet):
    return dict(unet.attn_processors)


def test_the_unet_processors_are_restored(pipe, exact):
    before = stock_of(pipe.unet)
    rnri.regenerate(pipe, exact, "a dog", control=AttentionControl())
    after = stock_of(pipe.unet)
    assert after.keys() == before.keys() and all(after[name] is before[name] for name in before)


def test_the_unet_processors_are_restored_after_an_error_inside(pipe, exact):
    def broken(q, k, v, bias):
        raise RuntimeError("inside the UNet")

    before = stock_of(pipe.unet)
    with pytest.raises(RuntimeError, match="inside the UNet"):
        rnri.regenerate(pipe, exact, "a dog", control=AttentionControl(inject=broken))
    after = stock_of(pipe.unet)
    assert all(after[name] is before[name] for name in before)
    state = ControlState(AttentionControl(), None, 2, (8, 8), False)
    with pytest.raises(KeyError), controlled_attention(pipe.unet, state):
        assert all(type(p).__name__ == "ControlledProcessor" for p in pipe.unet.attn_processors.values())
        raise KeyError("in the block")
    assert all(stock_of(pipe.unet)[name] is before[name] for name in before)


def test_other_processors_are_refused_and_left_in_place(pipe, exact):
    before = stock_of(pipe.unet)
    name = next(iter(before))
    custom = {**before, name: CustomProcessor()}
    pipe.unet.set_attn_processor(dict(custom))
    try:
        with pytest.raises(ValueError, match="standard attention processors"):
            rnri.regenerate(pipe, exact, "a dog", control=AttentionControl())
        assert stock_of(pipe.unet)[name] is custom[name]
    finally:
        pipe.unet.set_attn_processor(dict(before))


class CustomProcessor(AttnProcessor):
    """Not one of diffusers' stock processors (e.g. a LoRA or IP-Adapter processor)."""


def test_calls_that_are_not_the_controlled_run_get_the_stock_attention(pipe, exact):
    """Inside the block, a call from another thread computes exactly what the UNet computes, and records nothing."""
    eps_fn = adapter.unet_eps_fn(pipe, adapter.encode_prompt(pipe, "a cat"), adapter.guidance_embedding(pipe, 8.5))
    z = exact.latents
    with torch.no_grad():
        expected = eps_fn(z, 999)
        state = ControlState(AttentionControl(self_fraction=1.0), None, 1, (8, 8), record_maps=True)
        state.begin_step(0, 4)
        with controlled_attention(pipe.unet, state):
            results = {}
            worker = threading.Thread(target=lambda: results.update(other=eps_fn(z, 999)))
            worker.start()
            worker.join()
            recorded_by_other = state.step_maps()
            eps_fn(z, 999)
    assert torch.equal(results["other"], expected) and recorded_by_other is None
    assert state.step_maps() is not None  # this thread's call went through the controlled path


def test_a_painted_mask_with_control_keeps_the_source_outside(pipe, exact):
    mask = torch.zeros(64, 64)
    mask[8:24, 8:32] = 1.0
    latents = rnri.regenerate(
        pipe,
        exact,
        "a dog",
        output_type="latent",
        mask=mask,
        blend=rnri.BlendConfig(feather=0.0),
        control=AttentionControl(),
    )
    changed = (latents - exact.trajectory[-1]).abs().amax(dim=(0, 1)) > 0
    f = pipe.vae_scale_factor  # the painted rows 8..24 and columns 8..32 px, in latent cells
    assert changed.any() and not changed[-(-24 // f) :, :].any() and not changed[:, -(-32 // f) :].any()


def test_one_direction_against_the_prompt_regenerates_as_the_plain_edit(pipe, exact):
    plain = rnri.regenerate(pipe, exact, "a dog", output_type="latent")
    directed = rnri.regenerate(
        pipe,
        exact,
        "a cat",
        output_type="latent",
        directions=Directions((Direction("a dog"),), reference=None, threshold=None),
    )
    assert relative(directed, plain) < 1e-2  # the whole chain: float noise amplified, as above; edits differ by ~1
    still = rnri.regenerate(
        pipe, exact, "a cat", output_type="latent", directions=Directions((Direction("a dog", 0.0),))
    )
    assert relative(still, rnri.regenerate(pipe, exact, "a cat", output_type="latent")) < 1e-2


def test_control_needs_the_source_prompt(pipe, exact):
    with pytest.raises(ValueError, match="source prompt"):
        rnri.regenerate(pipe, dataclasses.replace(exact, prompt=""), "a dog", control=AttentionControl())


def test_shapeedit_rows_carry_each_edits_cost(pipe):
    variants = [v for v in CONTROL if v.label in ("rnri + attention control", "rnri, LEdits++ directions")]
    _, rows = run(pipe, variants, photos=1, seed=0, guidance=8.5)
    assert [(r.unet_calls, r.forward_equivalents) for r in rows] == [(4, 8), (4, 16)]  # source + edit; 4 prompts


def test_ledits_phrases_name_what_an_edit_takes_and_brings():
    edit = shape_edit(0, 1)[0][1][0]  # an edit of one object of two
    removed, added = phrases(edit)
    assert removed == edit.source.things[edit.index].words and added == edit.target.things[edit.index].words
    assert removed != added


def test_removal_ground_truth_scores_the_ideal_and_fails_the_unedited_photo():
    for removal in removals(0, 3):
        assert len(removal.target.things) == 1 and removal.source.things[removal.index] not in removal.target.things
        photo = render(removal.source).image
        ideal = score(removal, render(removal.target).image, photo)
        assert ideal.success and ideal.kept and ideal.background_psnr > 40
        unedited = score(removal, photo, photo)
        assert not unedited.success and unedited.kept


def test_the_ledits_peer_runs_on_a_stable_diffusion_pipeline():
    teacher = rnri.load_pipeline("tiny-teacher", device="cpu")  # the shapes teacher: StableDiffusionPipeline, DDIM
    peer = ledits_pipeline(teacher)
    config = dataclasses.replace(SHAPEEDIT, num_inversion_steps=3)
    inverted = ledits_invert(peer, noise_image(64, 64), "a red cat", config)
    image, cost = ledits_words(peer, "red", "blue", config)
    assert image.size == (64, 64) and peer.unet is teacher.unet
    assert (inverted.unet_calls, inverted.forward_equivalents) == (6, 6)  # unconditional and source caption apart
    assert (cost.unet_calls, cost.forward_equivalents) == (3, 9)  # unconditional + 2 edit prompts
