"""Front-end helpers for an editing session: checked photo uploads, painted masks, a bounded inversion cache,
debouncing.

No UI code here: the Gradio app (``app.py``) and any other front end use these to turn an uploaded file into an
RGB photo (or a message saying why not), to turn painted layers into the region a local edit acts in, to reuse an
inversion while only the target prompt or the mask changes, and to let only the last of a burst of requests through.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import math
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from rnri.api import Inversion
from rnri.counting import UNetCalls, count_unet_calls
from rnri.images import psnr, to_rgb
from rnri.masks import BlendConfig, blend_masks, fit_mask, mask_array

MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485  # Pillow's decompression-bomb threshold: refused above this
MAX_SIDE = 1024  # longer sides above this are downscaled (the models work at 512 px or less)
MIN_SIDE = 16  # shorter sides below this are refused: nothing is left to edit
MAX_PROMPT_CHARS = 1000  # longer prompts are cut before tokenising; CLIP takes 77 tokens anyway
EXIF_ORIENTATION = 0x0112
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
MAX_AUTO_MASKS = 8  # automatic masks kept per cached inversion (one per target prompt and guidance)
METHOD_OPTIONS = {"rnri": ("iterations", "prior_weight"), "fixed-point": ("iterations",), "ddim": ()}


class InputError(ValueError):
    """Input the editor cannot use (a bad upload, an empty prompt, a setting out of range); says why, in words."""


@dataclass(frozen=True)
class Photo:
    """A checked upload, ready to invert."""

    image: Image.Image  # 8-bit RGB, upright, sides from MIN_SIDE to MAX_SIDE
    digest: str  # hash of the pixels: the image part of an inversion's cache key
    notices: tuple[str, ...] = ()  # what was changed on the way in, for the user


def load_photo(source: str | Path | bytes | None) -> Photo:
    """Open, check and normalise an uploaded image (a file, or its bytes); ``InputError`` says what is wrong."""
    if source is None:
        raise InputError("Upload a photo first.")
    image = _open(source)
    notices = []
    if getattr(image, "n_frames", 1) > 1:
        notices.append(f"The file is animated ({image.n_frames} frames); its first frame was used.")
    orientation, mode = _orientation(image), image.mode
    if mode == "P" and "transparency" in image.info:
        mode = "PA"  # a palette with a transparent entry: to_rgb flattens it like an alpha channel
    if max(image.size) > MAX_SIDE and image.format == "JPEG":
        image.draft(image.mode, (MAX_SIDE, MAX_SIDE))  # decode at 1/2, 1/4 or 1/8 scale: fast and light
    rgb, opaque = _decode(image)
    if opaque:  # an alpha channel that hides nothing (an image editor's canvas exports one): nothing flattened
        mode = {"RGBA": "RGB", "LA": "L"}.get(mode, mode)
    if orientation not in (1, None):
        notices.append(f"Rotated upright as its EXIF orientation ({orientation}) says.")
    if mode != "RGB":
        notices.append(MODE_NOTES.get(mode, f"The image is in colour mode {mode}; it was converted to RGB."))
    rgb, resized = _fit(rgb)
    notices += resized
    return Photo(rgb, _digest(rgb), tuple(notices))


def _open(source: str | Path | bytes, what: str = "image") -> Image.Image:
    """The image's header, after refusing non-images and decompression bombs (nothing is decoded yet)."""
    name = f"The {what}" if isinstance(source, bytes) else repr(Path(source).name)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # refused below, with our message
            image = Image.open(io.BytesIO(source) if isinstance(source, bytes) else Path(source))
    except Image.DecompressionBombError as error:
        raise InputError(f"The {what} is too large to open safely ({error}).") from error
    except UnidentifiedImageError as error:
        raise InputError(
            f"{name} is not an image this editor can read (JPEG, PNG, WebP, GIF, BMP or TIFF)."
        ) from error
    except OSError as error:
        raise InputError(f"The upload could not be read ({error}).") from error
    width, height = image.size
    if width * height > MAX_PIXELS:
        image.close()
        raise InputError(
            f"The {what} is {width}x{height} pixels ({width * height / 1e6:.0f} megapixels); images over "
            f"{MAX_PIXELS / 1e6:.0f} megapixels are refused (a decompression bomb looks like this). "
            "Downscale it and upload again."
        )
    if min(width, height) < MIN_SIDE:
        image.close()
        raise InputError(
            f"The {what} is only {width}x{height} pixels; it needs at least {MIN_SIDE} pixels on each side."
        )
    return image


def _orientation(image: Image.Image) -> int | None:
    try:
        return image.getexif().get(EXIF_ORIENTATION)
    except Exception:  # a broken EXIF block is no reason to refuse the photo; it is then used as stored
        return None


def _decode(image: Image.Image) -> tuple[Image.Image, bool]:
    """Decode the pixels and bring them to upright 8-bit RGB; a truncated or damaged file is a ``InputError``.

    Also says whether the image has an alpha channel that is opaque everywhere.
    """
    with image:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                image.load()
        except Exception as error:  # Pillow raises OSError, SyntaxError, ValueError or zlib errors for bad data
            raise InputError(
                f"The image file is truncated or damaged and could not be decoded ({type(error).__name__}: {error})."
            ) from error
        opaque = image.mode in ("RGBA", "LA") and image.getchannel("A").getextrema()[0] == 255
        try:
            return to_rgb(image), opaque
        except Exception as error:
            raise InputError(f"Images in colour mode {image.mode} cannot be edited ({error}).") from error


def _fit(image: Image.Image) -> tuple[Image.Image, list[str]]:
    """Downscale so the longer side is at most ``MAX_SIDE``, with a notice saying so."""
    width, height = image.size
    if max(width, height) <= MAX_SIDE:
        return image, []
    scale = MAX_SIDE / max(width, height)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    notice = f"The image is large ({width}x{height}); it was downscaled to {size[0]}x{size[1]}."
    return image.resize(size, Image.Resampling.LANCZOS), [notice]


def _digest(image: Image.Image) -> str:
    pixels = hashlib.blake2b(image.tobytes(), digest_size=16)
    pixels.update(f"{image.mode}{image.size}".encode())
    return pixels.hexdigest()


def check_number(label: str, value: Any, low: float, high: float, integer: bool = False) -> float | int:
    """``value`` as a number (an int when ``integer``) from ``low`` to ``high``; ``InputError`` otherwise."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not low <= number <= high or (integer and not number.is_integer()):
        kind = "a whole number" if integer else "a number"
        raise InputError(f"{label} must be {kind} from {_plain(low)} to {_plain(high)}, got {value!r}.")
    return int(number) if integer else number


def _plain(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def clean_prompt(prompt: str | None, role: str) -> str:
    """``prompt`` stripped and cut to ``MAX_PROMPT_CHARS``; ``InputError`` when empty (role: what it is for)."""
    prompt = (prompt or "").strip()[:MAX_PROMPT_CHARS]
    if not prompt:
        raise InputError(f"The {role} is empty.")
    return prompt


@dataclass(frozen=True)
class LocalEdit:
    """Where an edit may act: the painted region, else (with ``auto``) one estimated from the prompts, else all."""

    auto: bool = False  # with nothing painted, estimate the region DiffEdit-style (rnri.auto_mask)
    blend: BlendConfig = BlendConfig()  # dilation, feather and paste-back of whichever region is used


def load_mask_layer(source: str | Path | bytes, what: str = "mask") -> Image.Image:
    """A painted layer or a mask image (or, with ``what="image"``, the editor's photo as sent), decoded and upright,
    after the same checks as a photo; ``InputError`` for a file that is not a readable image."""
    with _open(source, what) as image:
        try:
            image.load()
        except Exception as error:  # as in _decode: Pillow's many error types for damaged data
            raise InputError(f"The {what} could not be decoded ({type(error).__name__}: {error}).") from error
        return ImageOps.exif_transpose(image)  # upright, as the photo is


def layer_mask(layer: Image.Image) -> np.ndarray:
    """Where a layer marks the photo (H, W) in [0, 1].

    A layer with transparency (a brush layer from an image editor) marks every pixel painted at all, however
    translucent the brush; an opaque or grayscale image is a mask of its own (white = edit, grays are partial).
    """
    if "A" in layer.getbands() or "transparency" in layer.info:
        alpha = np.asarray(layer.convert("RGBA"))[..., 3]
        if alpha.min() < 255:
            return (alpha > 0).astype(np.float32)
    return mask_array(layer)


def painted_region(layers: Sequence[Image.Image], size: tuple[int, int]) -> torch.Tensor | None:
    """The union of the layers' marks at the photo's ``size = (width, height)``: (1, 1, H, W); None if unmarked."""
    region = None
    for layer in layers:
        try:
            marks = fit_mask(layer_mask(layer), size)
        except ValueError as error:
            raise InputError(
                f"The mask is {layer.width}x{layer.height} pixels but the photo is {size[0]}x{size[1]}: a mask "
                "must cover the whole photo, so it needs the photo's aspect ratio. Clear the mask and paint again."
            ) from error
        region = marks if region is None else torch.maximum(region, marks)
    return region if region is not None and float(region.max()) > 0 else None


def region_of(mask: Image.Image | torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A mask (an image such as ``rnri.auto_mask``'s, or a region) as a region at ``size``: (1, 1, H, W)."""
    return fit_mask(mask_array(mask), size)


OVERLAY_TINT = (255, 0, 200)  # magenta: rare in photos, so the region stands out
OVERLAY_OPACITY = 0.6  # of the tint where the edit acts fully


def mask_overlay(photo: Image.Image, region: torch.Tensor, blend: BlendConfig) -> Image.Image:
    """The photo tinted where the edit acts, as strongly as it acts there (the dilated, feathered mask)."""
    soft, _ = blend_masks(region, blend)
    weight = soft[0, 0].numpy()[..., None] * OVERLAY_OPACITY  # (H, W, 1)
    pixels = np.asarray(photo.convert("RGB"), dtype=np.float32) * (1 - weight) + np.array(OVERLAY_TINT) * weight
    return Image.fromarray(pixels.round().astype(np.uint8), "RGB")


def background_psnr(photo: Image.Image, edited: Image.Image, region: torch.Tensor, blend: BlendConfig) -> float:
    """PSNR (dB) of the edit against the photo where the mask does not reach; NaN if it reaches everywhere."""
    soft, _ = blend_masks(region, blend)
    outside = soft[0, 0].numpy() == 0  # (H, W)
    return psnr(photo, edited, where=outside) if outside.any() else math.nan


class BoundedDict(OrderedDict):
    """A dict that keeps only its ``capacity`` most recently written (or touched) entries; thread-safe writes."""

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity = capacity
        self._lock = threading.Lock()

    def __setitem__(self, key: Any, value: Any) -> None:
        with self._lock:
            super().__setitem__(key, value)
            self.move_to_end(key)
            while len(self) > self.capacity:
                self.popitem(last=False)

    def touch(self, key: Any) -> Any:
        """The value of ``key`` (None if absent), now counted as the most recently used."""
        with self._lock:
            if key not in self:
                return None
            self.move_to_end(key)
            return self[key]


@dataclass(frozen=True)
class InversionSettings:
    """Everything besides the photo and the source prompt that changes an inversion."""

    method: str = "rnri"  # "rnri", "ddim" or "fixed-point"
    num_inference_steps: int = 4
    guidance_scale: float = 8.5
    iterations: int = 1  # per step, for rnri (Newton) and fixed-point
    prior_weight: float = 0.1  # rnri only
    seed: int = 0  # the stored per-step noises
    strength: float = 1.0  # fraction of the chain inverted (the last steps)

    def relevant(self) -> InversionSettings:
        """These settings with the options ``method`` ignores at their defaults, so changing those inverts nothing."""
        ignored = {"iterations", "prior_weight"} - set(METHOD_OPTIONS.get(self.method, ()))
        return replace(self, **{name: getattr(InversionSettings, name) for name in ignored})

    def invert_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``rnri.invert``, with only the options that ``method`` takes."""
        if self.method not in METHOD_OPTIONS:
            raise InputError(f"Unknown method {self.method!r}; choose one of {sorted(METHOD_OPTIONS)}.")
        options = {name: getattr(self, name) for name in METHOD_OPTIONS[self.method]}
        return dict(
            method=self.method,
            num_inference_steps=self.num_inference_steps,
            guidance_scale=self.guidance_scale,
            seed=self.seed,
            strength=self.strength,
            **options,
        )


@dataclass(frozen=True)
class InversionKey:
    """What an inversion depends on, within one session."""

    session: str
    digest: str  # Photo.digest
    prompt: str  # the source prompt
    settings: InversionSettings


@dataclass
class Measured:
    """Wall time and UNet passes of a ``measure`` block."""

    seconds: float = 0.0
    calls: UNetCalls = field(default_factory=UNetCalls)


@dataclass
class CachedInversion:
    """An inversion with its reconstruction, as the app shows them."""

    inversion: Inversion
    reconstruction: Image.Image  # the source prompt's regeneration, at the photo's size
    psnr: float  # of the reconstruction against the photo, dB
    cost: Measured  # of the inversion
    reconstruction_cost: Measured
    notices: tuple[str, ...] = ()  # warnings raised while inverting (e.g. a truncated prompt)
    auto_masks: BoundedDict = field(default_factory=lambda: BoundedDict(MAX_AUTO_MASKS))  # (target, guidance) -> mask

    def remember_auto_mask(self, target: str, guidance: float, mask: Image.Image) -> None:
        """Keep the automatic mask for this target prompt, so that changing only the blend reuses it."""
        self.auto_masks[(target, guidance)] = mask


class InversionCache:
    """A least-recently-used map from ``InversionKey`` to ``CachedInversion``, bounded in entries; thread-safe."""

    def __init__(self, capacity: int = 16) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self._entries: BoundedDict = BoundedDict(capacity)

    def get(self, key: InversionKey) -> CachedInversion | None:
        return self._entries.touch(key)

    def put(self, key: InversionKey, value: CachedInversion) -> None:
        self._entries[key] = value

    def __len__(self) -> int:
        return len(self._entries)


@dataclass
class LatestRequest:
    """Tickets per session, so that of a burst of requests only the last one goes on (debouncing)."""

    max_sessions: int = 1024  # sessions remembered; the least recently seen is forgotten
    _tickets: OrderedDict[str, int] = field(default_factory=OrderedDict)
    _numbers: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def issue(self, session: str) -> int:
        """A new ticket for ``session`` (unique across sessions); earlier ones of that session stop being latest."""
        with self._lock:
            ticket = next(self._numbers)
            self._tickets.pop(session, None)
            self._tickets[session] = ticket
            while len(self._tickets) > self.max_sessions:
                self._tickets.popitem(last=False)
            return ticket

    def is_latest(self, session: str, ticket: int) -> bool:
        with self._lock:
            return self._tickets.get(session) == ticket


@contextmanager
def measure(unet: Any) -> Iterator[Measured]:
    """Time the ``with`` block and count the UNet passes in it (by hooks on ``unet``)."""
    result = Measured()
    start = time.perf_counter()
    with count_unet_calls(unet) as calls:
        result.calls = calls
        yield result
    result.seconds = time.perf_counter() - start
