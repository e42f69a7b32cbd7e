"""Local edits: blended regeneration keeps everything outside the mask; masks of every kind are accepted."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import noise_image
from PIL import Image

import rnri
from rnri.core.masks import BlendConfig, dilate, fit_mask
from rnri.pipelines.images import mask_tensor, psnr

SIZE = (64, 48)  # width, height of the test photo


@pytest.fixture(scope="module")
def inversion(pipe):
    return rnri.invert(pipe, "a cat on a sofa", image=noise_image(*SIZE, seed=5))


def painted(size=SIZE, box=(8, 8, 28, 24)) -> Image.Image:
    mask = Image.new("L", size, 0)
    mask.paste(255, box)
    return mask


def test_empty_mask_gives_back_the_source(pipe, inversion):
    latents = rnri.regenerate(pipe, inversion, "a dog on a sofa", mask=Image.new("L", SIZE, 0), output_type="latent")
    assert torch.equal(latents, inversion.trajectory[-1])
    out = rnri.regenerate(pipe, inversion, "a dog on a sofa", mask=Image.new("L", SIZE, 0))
    assert np.array_equal(np.asarray(out), np.asarray(inversion.source_image))


def test_full_mask_equals_the_unmasked_edit(pipe, inversion):
    full = rnri.regenerate(pipe, inversion, "a dog", mask=Image.new("L", SIZE, 255), output_type="latent")
    plain = rnri.regenerate(pipe, inversion, "a dog", output_type="latent")
    assert torch.allclose(full, plain, atol=1e-5)


def test_outside_a_painted_mask_is_the_input_exactly_with_paste_back(pipe, inversion):
    config = BlendConfig(dilation=2, feather=2.0)
    out = np.asarray(rnri.regenerate(pipe, inversion, "a dog", mask=painted(), blend=config)).astype(int)
    source = np.asarray(inversion.source_image).astype(int)
    outside = dilate(fit_mask(mask_tensor(painted()), SIZE), 2)[0, 0].numpy() == 0
    assert outside.sum() > 0.5 * outside.size
    assert np.array_equal(out[outside], source[outside])
    assert np.abs(out[~outside] - source[~outside]).mean() > 1  # the edit did change the inside


def test_without_paste_back_outside_follows_the_source_chain(pipe, inversion):
    """Without paste-back the latents outside the mask are the source's exactly; in pixels the decoder spreads the
    edit a little (its GroupNorm and attention see the whole image). The stated tolerance: far from the mask the
    pixels move less than 90% of what the unmasked edit moves them (the tiny model's random decoder is the worst
    case; docs/local-edits.md has the real measurements)."""
    config = BlendConfig(paste_back=False, feather=0.0)
    latents = rnri.regenerate(pipe, inversion, "a dog", mask=painted(), blend=config, output_type="latent")
    changed = (latents - inversion.trajectory[-1]).abs().amax(dim=(0, 1)) > 0
    f = pipe.vae_scale_factor  # the box (8..28, 8..24) px covers latent cells up to ceil(28 / f), ceil(24 / f)
    assert changed.any() and not changed[-(-24 // f) :, :].any() and not changed[:, -(-28 // f) :].any()
    masked = np.asarray(rnri.regenerate(pipe, inversion, "a dog", mask=painted(), blend=config)).astype(float)
    empty = np.asarray(rnri.regenerate(pipe, inversion, "a dog", mask=Image.new("L", SIZE, 0), blend=config))
    unmasked = np.asarray(rnri.regenerate(pipe, inversion, "a dog")).astype(float)
    far = np.ones((SIZE[1], SIZE[0]), bool)
    far[0:32, 0:44] = False  # the painted box grown by 16 px (two latent cells)
    assert np.abs(masked[far] - empty[far]).mean() < 0.9 * np.abs(unmasked[far] - empty[far]).mean()


@pytest.mark.parametrize("kind", ["rgba-layer", "L", "1", "double-size", "bool-array", "float-tensor", "all-one"])
def test_masks_of_every_kind(pipe, inversion, kind):
    box = painted()
    if kind == "rgba-layer":  # an editor layer: transparent everywhere but the stroke
        layer = Image.new("RGBA", SIZE, (0, 0, 0, 0))
        layer.paste((255, 0, 0, 255), (8, 8, 28, 24))
        mask = layer
    elif kind == "1":
        mask = box.convert("1")
    elif kind == "double-size":
        mask = box.resize((SIZE[0] * 2, SIZE[1] * 2), Image.Resampling.NEAREST)
    elif kind == "bool-array":
        mask = np.asarray(box) > 0
    elif kind == "float-tensor":
        mask = torch.from_numpy(np.asarray(box) / 255.0)
    elif kind == "all-one":
        mask = np.ones((SIZE[1], SIZE[0]), np.float32)
    else:
        mask = box
    assert mask_tensor(mask).max() == 1.0
    out = rnri.regenerate(pipe, inversion, "a dog", mask=mask)
    assert out.size == SIZE


def test_a_mask_that_matches_no_image_is_a_clear_error(pipe, inversion):
    with pytest.raises(ValueError, match="must cover the image"):
        rnri.regenerate(pipe, inversion, "a dog", mask=Image.new("L", (10, 40), 255))
    with pytest.raises(ValueError, match="2-D"):
        rnri.regenerate(pipe, inversion, "a dog", mask=np.zeros((2, 3, 4, 5)))
    with pytest.raises(ValueError, match="dilation"):
        BlendConfig(dilation=-1)


def test_auto_mask(pipe, inversion):
    same = rnri.auto_mask(pipe, inversion, "a cat on a sofa")
    assert same.size == SIZE and np.asarray(same).max() == 0  # same prompt: nothing to edit
    other = np.asarray(rnri.auto_mask(pipe, inversion, "a red sports car"))
    assert set(np.unique(other)) <= {0, 255} and other.max() == 255
    out = rnri.regenerate(pipe, inversion, "a red sports car", mask="auto")
    assert out.size == SIZE


def test_psnr_over_a_region():
    a = Image.new("RGB", (8, 4), (100, 100, 100))
    b = a.copy()
    b.paste((110, 100, 100), (0, 0, 4, 4))  # the left half differs by 10 in one channel
    left = np.zeros((4, 8), bool)
    left[:, :4] = True
    assert psnr(a, b, where=~left) == math.inf and psnr(a, a) == math.inf
    assert psnr(a, b, where=left) == pytest.approx(10 * math.log10(255**2 / (100 / 3)))
    assert psnr(a, b) == pytest.approx(10 * math.log10(255**2 / (100 / 6)))


def test_one_large_speck_does_not_empty_the_automatic_mask():
    """A region that differs, and one pixel that differs 8 times more: normalised before smoothing, the speck set
    the scale (the region 1/8 of it, the smoothed speck 1/9) and nothing reached the threshold."""
    from rnri.core.masks import threshold_mask

    difference = torch.zeros(20, 20)
    difference[4:10, 4:10] = 1.0
    difference[15, 15] = 8.0
    mask = threshold_mask(difference, 0.5)[0, 0]
    assert mask[15, 15] == 1 and mask[6, 6] == 1 and mask[0, 0] == 0
