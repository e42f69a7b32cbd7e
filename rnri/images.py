"""Bringing any PIL image to the RGB, multiple-of-8 form a VAE takes, and back."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageOps

MIN_SIDE = 8  # the VAE's downsampling factor; smaller images are scaled up to this


def to_rgb(image: Image.Image) -> Image.Image:
    """An 8-bit RGB copy of ``image``: EXIF rotation applied, transparency composited on white, 16-bit scaled."""
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        values = np.asarray(image, dtype=np.float64)
        lo, hi = float(values.min()), float(values.max())
        image = Image.fromarray(((values - lo) / max(hi - lo, 1e-12) * 255.0).round().astype(np.uint8), "L")
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
