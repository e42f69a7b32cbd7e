"""Where a local edit acts, as the editor shows it: painted layers to a region, the region over the photo, and how
much of the photo outside it the edit kept."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
import torch
from PIL import Image

from rnri.core.masks import BlendConfig, blend_masks, fit_mask
from rnri.editor.uploads import MAX_PIXELS, InputError, Source, load_layer
from rnri.pipelines.images import mask_tensor, psnr

TINT = (255, 0, 200)  # magenta, the brush's colour: rare in photos, so the region stands out
OVERLAY_OPACITY = 0.6  # of the tint where the edit acts fully
LAYER_OPACITY = 128  # alpha of a painted layer the editor sends back (as the brush paints)
MAX_LAYERS = 4  # painted layers read per request (the page's editor sends one); more are refused before decoding


def layer_mask(layer: Image.Image) -> torch.Tensor:
    """Where a layer marks the photo (H, W) in [0, 1].

    A layer with transparency (a brush layer from an image editor) marks every pixel painted at all, however
    translucent the brush; an opaque or grayscale image is a mask of its own (white = edit, grays are partial).
    """
    if "A" in layer.getbands() or "transparency" in layer.info:
        alpha = np.asarray(layer.convert("RGBA"))[..., 3]
        if alpha.min() < 255:
            return torch.from_numpy((alpha > 0).astype(np.float32))
    return mask_tensor(layer)


def painted_region(layers: Sequence[Image.Image], size: tuple[int, int]) -> torch.Tensor | None:
    """The union of the layers' marks at the photo's ``size = (width, height)``: (1, 1, H, W); None if unmarked."""
    return _union(_marks(layer, size) for layer in layers)


def read_region(sources: Sequence[Source], size: tuple[int, int], max_pixels: int = MAX_PIXELS) -> torch.Tensor | None:
    """:func:`painted_region` of mask or layer files, read one at a time: at most ``MAX_LAYERS`` of them, each
    refused from its header above ``max_pixels``, and each decoded layer let go before the next is read."""
    if len(sources) > MAX_LAYERS:
        raise InputError(f"{len(sources)} painted layers were sent; at most {MAX_LAYERS} are read.")

    def marks(source: Source) -> torch.Tensor:
        with load_layer(source, max_pixels=max_pixels) as layer:
            return _marks(layer, size)

    return _union(marks(source) for source in sources)


def _marks(layer: Image.Image, size: tuple[int, int]) -> torch.Tensor:
    try:
        return fit_mask(layer_mask(layer), size)
    except ValueError as error:
        raise InputError(
            f"The mask is {layer.width}x{layer.height} pixels but the photo is {size[0]}x{size[1]}: a mask "
            "must cover the whole photo, so it needs the photo's aspect ratio. Clear the mask and paint again."
        ) from error


def _union(marks: Iterable[torch.Tensor]) -> torch.Tensor | None:
    region = None
    for found in marks:
        region = found if region is None else torch.maximum(region, found)
    return region if region is not None and float(region.max()) > 0 else None


def region_of(mask: Image.Image | torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A mask (an image such as ``rnri.auto_mask``'s, or a region) as a region at ``size``: (1, 1, H, W)."""
    return fit_mask(mask_tensor(mask), size)


def overlay(photo: Image.Image, region: torch.Tensor | None, blend: BlendConfig) -> Image.Image:
    """The photo tinted where the edit acts, as strongly as it acts there (the dilated, feathered mask); all of it
    without a region."""
    if region is None:
        region = torch.ones(1, 1, photo.height, photo.width)
    soft, _ = blend_masks(region, blend)
    weight = soft[0, 0].numpy()[..., None] * OVERLAY_OPACITY  # (H, W, 1)
    pixels = np.asarray(photo.convert("RGB"), dtype=np.float32) * (1 - weight) + np.array(TINT) * weight
    return Image.fromarray(pixels.round().astype(np.uint8), "RGB")


def brush_layer(mask: Image.Image, size: tuple[int, int]) -> Image.Image:
    """A mask as the brush would have painted it over a photo of ``size``: translucent magenta, clear elsewhere."""
    marks = np.asarray(mask.convert("L").resize(size, Image.Resampling.NEAREST)) > 0
    layer = np.zeros((size[1], size[0], 4), dtype=np.uint8)
    layer[marks] = (*TINT, LAYER_OPACITY)
    return Image.fromarray(layer, "RGBA")


def background_psnr(photo: Image.Image, edited: Image.Image, region: torch.Tensor, blend: BlendConfig) -> float:
    """PSNR (dB) of the edit against the photo where the mask does not reach; NaN if it reaches everywhere."""
    soft, _ = blend_masks(region, blend)
    outside = soft[0, 0].numpy() == 0  # (H, W)
    return psnr(photo, edited, where=outside) if outside.any() else math.nan
