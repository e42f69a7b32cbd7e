"""The one image loader of every front end: a file (or its bytes) to an upright 8-bit RGB photo, or an
``InputError`` that says, in words, why not.

The editor, the command line's ``edit`` and ``batch`` all read photos here, so a decompression bomb, a truncated
file or a file that is no image is refused the same way everywhere; odd modes, EXIF rotation and animation are
repaired with a notice. Masks and painted layers go through the same checks (:func:`load_layer`).
"""

from __future__ import annotations

import hashlib
import io
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from rnri.pipelines.images import to_rgb

# Decoding costs memory by the pixel: 24 megapixels (6000x4000, a camera's photo) take ~100 MB as 8-bit RGBA and
# ~300 MB at the peak of a 16-bit file's conversion, which a 2-core server with a few GB serves while it edits.
# Larger JPEGs are decoded at 1/2 to 1/8 scale (Image.draft) where they are downscaled anyway (the editor).
MAX_PIXELS = 24_000_000  # decoded in full at most; files that would need more are refused before decoding
BOMB_PIXELS = 89_478_485  # Pillow's decompression-bomb threshold: no file larger than this is opened at all
MAX_SIDE = 1024  # the editor downscales longer sides (the models work at 512 px or less); the CLI keeps the size
MIN_SIDE = 16  # shorter sides below this are refused, as read and after downscaling: nothing is left to edit
MAX_PROMPT_CHARS = 1000  # longer prompts are cut before tokenising; CLIP takes 77 tokens anyway
# At most this many images are decoded at once in the process, whichever route (queued or not) or thread asks:
# 24 requests decoding a 24-megapixel PNG together peaked at 8.4 GB; two at a time peak under 1 GB.
DECODING = threading.BoundedSemaphore(2)
EXIF_ORIENTATION = 0x0112
READABLE = "JPEG, PNG, WebP, GIF, BMP or TIFF"
MODE_NOTES = {  # what converting each Pillow mode to 8-bit RGB did, for the user
    "1": "The image is black and white (1-bit); it was converted to RGB.",
    "L": "The image is grayscale; it was converted to RGB.",
    "LA": "The image is grayscale with transparency; it was flattened onto white and converted to RGB.",
    "P": "The image uses a colour palette; it was converted to RGB.",
    "PA": "The image uses a colour palette with transparency; it was flattened onto white.",
    "RGBA": "The image has transparency; it was flattened onto white.",
    "CMYK": "The image is CMYK; it was converted to RGB (colours may shift a little).",
    "I;16": "The image is 16-bit; it was scaled to 8 bits.",
    "I;16B": "The image is 16-bit; it was scaled to 8 bits.",
    "I;16L": "The image is 16-bit; it was scaled to 8 bits.",
    "I": "The image is 32-bit integer; it was scaled to 8 bits.",
    "F": "The image is 32-bit floating point; it was scaled to 8 bits.",
}

Source = str | Path | bytes  # a file, or the bytes a page sent


class InputError(ValueError):
    """Input the editor cannot use (a bad upload, an empty prompt, a setting out of range); says why, in words."""


@dataclass(frozen=True)
class Photo:
    """A checked upload, ready to invert."""

    image: Image.Image  # 8-bit RGB, upright, sides from MIN_SIDE up (to MAX_SIDE in the editor)
    digest: str  # hash of the pixels: the image part of an inversion's cache key
    notices: tuple[str, ...] = ()  # what was changed on the way in, for the user


def load_photo(source: Source | None, max_side: int | None = MAX_SIDE) -> Photo:
    """Open, check and normalise an image; longer sides over ``max_side`` are downscaled (None: kept)."""
    if source is None:
        raise InputError("Upload a photo first.")
    image = _open(source, max_pixels=BOMB_PIXELS)  # a large JPEG may still be read reduced
    notices = []
    if getattr(image, "n_frames", 1) > 1:
        notices.append(f"The file is animated ({image.n_frames} frames); its first frame was used.")
    orientation, mode = _orientation(image), image.mode
    if mode == "P" and "transparency" in image.info:
        mode = "PA"  # a palette with a transparent entry: to_rgb flattens it like an alpha channel
    if max_side and max(image.size) > max_side and image.format == "JPEG":
        image.draft(image.mode, (max_side, max_side))  # decode at 1/2, 1/4 or 1/8 scale: fast and light
    _check_size(image, "image", MAX_PIXELS)  # what will be decoded, after any reduction
    _check_fitted(image.size, max_side)
    with DECODING:
        rgb, opaque = _decode(image, _name(source))
        rgb, resized = _fit(rgb, max_side)
    if opaque:  # an alpha channel that hides nothing (an image editor's canvas exports one): nothing flattened
        mode = {"RGBA": "RGB", "LA": "L"}.get(mode, mode)
    if orientation not in (1, None):
        notices.append(f"Rotated upright as its EXIF orientation ({orientation}) says.")
    if mode != "RGB":
        notices.append(MODE_NOTES.get(mode, f"The image is in colour mode {mode}; it was converted to RGB."))
    return Photo(rgb, digest(rgb), tuple(notices + resized))


def load_layer(source: Source, what: str = "mask", max_pixels: int = MAX_PIXELS) -> Image.Image:
    """A mask, a painted layer (or, with ``what="image"``, a photo as sent) decoded and upright, after the same
    checks as a photo (``max_pixels``: the most it may have); not converted, so transparency still marks where a
    brush painted."""
    with _open(source, what, max_pixels) as image, DECODING:
        try:
            image.load()
        except Exception as error:  # as in _decode: Pillow's many error types for damaged data
            raise InputError(f"The {what} could not be decoded ({type(error).__name__}: {error}).") from error
        return ImageOps.exif_transpose(image)  # upright, as the photo is


def image_size(source: Source, what: str = "image", max_pixels: int = MAX_PIXELS) -> tuple[int, int]:
    """An image's upright (width, height) from its header, after the checks of :func:`load_layer`; nothing is
    decoded."""
    with _open(source, what, max_pixels) as image:
        width, height = image.size
        return (height, width) if _orientation(image) in (5, 6, 7, 8) else (width, height)


def clean_prompt(prompt: object, role: str, required: bool = True) -> str:
    """``prompt`` stripped and cut to ``MAX_PROMPT_CHARS``; ``InputError`` when not text, not valid Unicode or,
    if ``required``, empty (role: what it is for). A source prompt is not required: empty, the photo is inverted
    unconditionally, as LEdits++ allows."""
    if prompt is not None and not isinstance(prompt, str):
        raise InputError(f"The {role} must be text, got {type(prompt).__name__}.")
    prompt = (prompt or "").strip()[:MAX_PROMPT_CHARS]
    if not prompt and required:
        raise InputError(f"The {role} is empty.")
    try:
        prompt.encode("utf-8")
    except UnicodeEncodeError as error:  # a lone surrogate (from JSON's \ud800): no tokenizer can read it
        raise InputError(f"The {role} holds a character that is not valid text at position {error.start}.") from None
    return prompt


def digest(image: Image.Image) -> str:
    """A hash of the pixels, mode and size."""
    pixels = hashlib.blake2b(image.tobytes(), digest_size=16)
    pixels.update(f"{image.mode}{image.size}".encode())
    return pixels.hexdigest()


def _name(source: Source) -> str:
    return "The image" if isinstance(source, bytes) else repr(Path(source).name)


def _open(source: Source, what: str = "image", max_pixels: int = MAX_PIXELS) -> Image.Image:
    """The image's header, after refusing non-images, decompression bombs and images of more than ``max_pixels``
    (nothing is decoded yet)."""
    name = f"The {what}" if isinstance(source, bytes) else repr(Path(source).name)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # refused below, with our message
            image = Image.open(io.BytesIO(source) if isinstance(source, bytes) else Path(source))
    except Image.DecompressionBombError as error:
        raise InputError(f"The {what} is too large to open safely ({error}).") from error
    except UnidentifiedImageError as error:
        raise InputError(f"{name} is not an image rnri can read ({READABLE}).") from error
    except FileNotFoundError as error:
        raise InputError(f"{name}: no such file.") from error
    except OSError as error:
        raise InputError(f"{name} could not be read ({error}).") from error
    _check_size(image, what, max_pixels)
    return image


def _check_size(image: Image.Image, what: str, max_pixels: int) -> None:
    width, height = image.size
    if width * height > max_pixels:
        image.close()
        jpegs = f" (JPEGs up to {BOMB_PIXELS / 1e6:.0f} where they are downscaled anyway)" if what == "image" else ""
        if max_pixels >= BOMB_PIXELS:
            jpegs = " (a decompression bomb looks like this)"
        raise InputError(
            f"The {what} is {width}x{height} pixels ({width * height / 1e6:.0f} megapixels); images over "
            f"{max_pixels / 1e6:.0f} megapixels are refused{jpegs}. Downscale it and try again."
        )
    if min(width, height) < MIN_SIDE:
        image.close()
        raise InputError(
            f"The {what} is only {width}x{height} pixels; it needs at least {MIN_SIDE} pixels on each side."
        )


def _orientation(image: Image.Image) -> int | None:
    try:
        return image.getexif().get(EXIF_ORIENTATION)
    except Exception:  # a broken EXIF block is no reason to refuse the photo; it is then used as stored
        return None


def _decode(image: Image.Image, name: str) -> tuple[Image.Image, bool]:
    """Decode the pixels and bring them to upright 8-bit RGB; a truncated or damaged file is an ``InputError``.

    Also says whether the image has an alpha channel that is opaque everywhere.
    """
    with image:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                image.load()
        except Exception as error:  # Pillow raises OSError, SyntaxError, ValueError or zlib errors for bad data
            raise InputError(
                f"{name} is truncated or damaged and could not be decoded ({type(error).__name__}: {error})."
            ) from error
        opaque = image.mode in ("RGBA", "LA") and image.getchannel("A").getextrema()[0] == 255
        try:
            return to_rgb(image), opaque
        except Exception as error:
            raise InputError(f"Images in colour mode {image.mode} cannot be edited ({error}).") from error


def _fitted(size: tuple[int, int], max_side: int | None) -> tuple[int, int]:
    """``size`` downscaled so the longer side is at most ``max_side`` (None: kept)."""
    width, height = size
    if not max_side or max(width, height) <= max_side:
        return size
    scale = max_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def _check_fitted(size: tuple[int, int], max_side: int | None) -> None:
    """Refuse an image whose shorter side, once downscaled, falls under ``MIN_SIDE`` (a 100000x16 strip)."""
    fitted = _fitted(size, max_side)
    if min(fitted) < MIN_SIDE:
        raise InputError(
            f"The image is {size[0]}x{size[1]} pixels: downscaled to {fitted[0]}x{fitted[1]} for editing, its shorter "
            f"side would be under {MIN_SIDE} pixels. Crop it to an aspect ratio of at most "
            f"{max_side // MIN_SIDE}:1 and try again."
        )


def _fit(image: Image.Image, max_side: int | None) -> tuple[Image.Image, list[str]]:
    """Downscale so the longer side is at most ``max_side``, with a notice saying so."""
    width, height = image.size
    size = _fitted(image.size, max_side)
    if size == image.size:
        return image, []
    notice = f"The image is large ({width}x{height}); it was downscaled to {size[0]}x{size[1]}."
    return image.resize(size, Image.Resampling.LANCZOS), [notice]
