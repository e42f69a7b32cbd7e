"""Bringing any PIL image to the RGB, multiple-of-8 form a VAE takes, and back; masks from and to images."""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image, ImageOps

MIN_SIDE = 8  # the VAE's downsampling factor; smaller images are scaled up to this


def to_rgb(image: Image.Image) -> Image.Image:
    """An 8-bit RGB copy of ``image``: EXIF rotation applied, transparency composited on white, 16-bit scaled."""
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        values = np.asarray(image, dtype=np.float32)  # one float32 copy, scaled in place: 4 bytes a pixel at most
        lo, hi = float(values.min()), float(values.max())
        values -= lo
        values *= 255.0 / max(hi - lo, 1e-12)
        image = Image.fromarray(np.rint(values, out=values).astype(np.uint8), "L")
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB")


def fit_size(width: int, height: int, resolution: int, multiple: int = 8) -> tuple[int, int]:
    """(width, height) with the longer side near ``resolution``, both multiples of ``multiple``, aspect kept."""
    if width < 1 or height < 1:
        raise ValueError(f"image has no pixels ({width}x{height})")
    scale = resolution / max(width, height)

    def side(n: int) -> int:
        return max(multiple, int(round(n * scale / multiple)) * multiple)

    return side(width), side(height)


def psnr(a: Image.Image, b: Image.Image, where: np.ndarray | None = None) -> float:
    """Peak signal-to-noise ratio between two same-size RGB images, in dB (inf when identical); ``where``, a
    boolean (H, W) array, limits it to those pixels."""
    x = np.asarray(a.convert("RGB"), dtype=np.float64)
    y = np.asarray(b.convert("RGB"), dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"images differ in size: {a.size} and {b.size}")
    if where is not None:
        x, y = x[where], y[where]
    mse = float(np.mean((x - y) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def mask_tensor(mask: Image.Image | np.ndarray | torch.Tensor) -> torch.Tensor:
    """A mask of any kind as a float tensor (H, W) in [0, 1], for ``rnri.core.masks``.

    PIL images: a layer with transparency (RGBA / LA from an image editor) gives its alpha; otherwise luminance,
    with 16-bit and float images scaled by their maximum. Arrays: bool, integer (0-255) or float (0-1).
    """
    values = _image_mask(mask) if isinstance(mask, Image.Image) else _array_mask(mask)
    return torch.from_numpy(np.ascontiguousarray(values))


def _image_mask(mask: Image.Image) -> np.ndarray:
    if mask.mode in ("RGBA", "LA", "PA") or (mask.mode == "P" and "transparency" in mask.info):
        alpha = np.asarray(mask.convert("RGBA"))[..., 3]
        if alpha.min() < 255:
            return alpha.astype(np.float32) / 255.0
    if mask.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        values = np.asarray(mask, dtype=np.float32)
        return np.clip(values / max(float(values.max()), 1e-12), 0.0, 1.0)
    return np.asarray(mask.convert("L"), dtype=np.float32) / 255.0


def _array_mask(mask: np.ndarray | torch.Tensor) -> np.ndarray:
    values = np.squeeze(mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask))
    if values.ndim == 3:
        values = values.max(axis=-1)
    if values.ndim != 2:
        raise ValueError(f"a mask must be a 2-D image, got an array of shape {np.shape(mask)}")
    if values.dtype == bool:
        return values.astype(np.float32)
    if np.issubdtype(values.dtype, np.integer):
        return np.clip(values.astype(np.float32) / 255.0, 0.0, 1.0)
    values = values.astype(np.float32)
    if not np.isfinite(values).all():
        raise ValueError("the mask contains NaN or infinite values")
    return np.clip(values, 0.0, 1.0)


def mask_image(mask: torch.Tensor, size: tuple[int, int]) -> Image.Image:
    """A (1, 1, h, w) mask as an 8-bit grayscale image of ``size = (width, height)`` (nearest neighbour)."""
    pixels = (mask[0, 0].clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    return Image.fromarray(pixels, "L").resize(size, Image.Resampling.NEAREST)
