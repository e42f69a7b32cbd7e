"""Local edits: pixel masks, their latent-size versions, the blended chain, and DiffEdit-style automatic masks.

Masks here are tensors; reading one from an image or an array, and writing one as an image, is
``rnri.pipelines.images``'.

A mask is 1 where the edit acts and 0 where the photo must stay as it was. The blended chain (Blended Latent
Diffusion, Avrahami et al. 2023) follows the edit inside the mask and the inverted source chain outside it:
``z_{i+1} = m * S_i(z_i) + (1 - m) * z_{i+1}^src``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from rnri.core.chain import EpsFn, Step, step_map
from rnri.core.options import option

ASPECT_TOLERANCE = 0.02  # relative aspect-ratio difference up to which a mask is taken to match its image


@dataclass(frozen=True)
class BlendConfig:
    """How a mask shapes a local edit."""

    dilation: int = option(  # pixels of the input image
        0, "Mask dilation (px)", "Grow the painted or automatic region by this much.", low=0, high=64, step=1
    )
    feather: float = option(  # the standard deviation of the Gaussian that softens the region's edge
        4.0, "Mask feather (px)", "Soften the edge: the edit fades out over ~3x this.", low=0, high=32, step=0.5
    )
    paste_back: bool = option(  # after decoding, outside the (dilated) region
        True, "Paste back", "Keep every pixel outside the mask exactly as it was."
    )

    def __post_init__(self) -> None:
        if self.dilation < 0 or not self.feather >= 0:
            raise ValueError(f"dilation and feather must be >= 0, got {self.dilation} and {self.feather}")


def fit_mask(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A mask (H, W) in [0, 1] resized (bilinear) to ``size = (width, height)``: (1, 1, H, W); refuses another
    aspect ratio."""
    height, width = mask.shape
    aspect, target = width / height, size[0] / size[1]
    if abs(aspect - target) / target > ASPECT_TOLERANCE:
        raise ValueError(
            f"the mask is {width}x{height} but the image is {size[0]}x{size[1]}; "
            "a mask must cover the image it edits (same aspect ratio)"
        )
    tensor = mask.float()[None, None]
    if (width, height) == size:
        return tensor
    return F.interpolate(tensor, size=(size[1], size[0]), mode="bilinear", align_corners=False).clamp(0.0, 1.0)


def dilate(mask: torch.Tensor, pixels: int) -> torch.Tensor:
    """Grow the mask (1, 1, H, W) by ``pixels`` (a square max filter)."""
    if pixels == 0:
        return mask
    return F.max_pool2d(mask, kernel_size=2 * pixels + 1, stride=1, padding=pixels)


def feather(mask: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of standard deviation ``sigma`` truncated at 3 sigma: exactly 0 farther from the mask."""
    if sigma == 0:
        return mask
    radius = max(1, math.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=mask.dtype)
    kernel = torch.exp(-(x**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    soft = F.conv2d(F.pad(mask, (radius, radius, 0, 0), mode="replicate"), kernel.view(1, 1, 1, -1))
    soft = F.conv2d(F.pad(soft, (0, 0, radius, radius), mode="replicate"), kernel.view(1, 1, -1, 1))
    return soft.clamp(0.0, 1.0)


def blend_masks(mask: torch.Tensor, config: BlendConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """From a painted pixel mask (1, 1, H, W): the soft mask that blends latents, and the one that pastes pixels.

    The latent mask is the dilated region feathered outwards, so the edit fades into its surroundings; the paste
    mask is that soft mask cut to the dilated region, so every pixel outside the region is the original's exactly.
    """
    region = dilate(mask, config.dilation)
    soft = feather(region, config.feather)
    return soft, torch.minimum(region, soft)


def latent_mask(mask: torch.Tensor, latent_size: tuple[int, int]) -> torch.Tensor:
    """Area-average a pixel mask (1, 1, H, W) down to the latent grid ``(h, w)``."""
    return F.interpolate(mask, size=latent_size, mode="area")


def blended_sample(
    eps_fn: EpsFn,
    steps: list[Step],
    source: list[torch.Tensor],
    noises: list[torch.Tensor | None],
    mask: torch.Tensor,
) -> list[torch.Tensor]:
    """The chain that edits inside ``mask`` (1, 1, h, w) and follows the inverted ``source`` trajectory outside."""
    trajectory = [source[0]]
    for i, step in enumerate(steps):
        z = trajectory[-1]
        edited = step_map(z, eps_fn(z, step.t), step, None if step.is_last else noises[i])
        trajectory.append(mask * edited + (1.0 - mask) * source[i + 1])  # Blended Latent Diffusion, Eq. 3
    return trajectory


def noise_difference(
    eps_source: EpsFn, eps_target: EpsFn, steps: list[Step], latents: list[torch.Tensor]
) -> torch.Tensor:
    """DiffEdit's map: ``|eps_target - eps_source|`` at each inverted latent, channel-averaged, summed: (h, w)."""
    total = torch.zeros(latents[0].shape[-2:], device=latents[0].device)
    for step, z in zip(steps, latents):
        total += (eps_target(z, step.t) - eps_source(z, step.t)).abs().mean(dim=(0, 1))
    return total


def threshold_mask(difference: torch.Tensor, threshold: float) -> torch.Tensor:
    """Smooth away specks, normalise to [0, 1], binarise at ``threshold`` (DiffEdit, Sec. 3.2): (1, 1, h, w).

    Normalised after smoothing: normalised before, one large speck made every smoothed value fall under the
    threshold, and prompts that differ got an empty mask."""
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    smooth = F.avg_pool2d(difference[None, None], kernel_size=3, stride=1, padding=1, count_include_pad=False)
    return (smooth / smooth.max().clamp_min(1e-12) >= threshold).float()
