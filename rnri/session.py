"""Front-end helpers for an editing session: checked photo uploads, a bounded inversion cache, debouncing.

No UI code here: the Gradio app (``app.py``) and any other front end use these to turn an uploaded file into an
RGB photo (or a message saying why not), to reuse an inversion while only the target prompt changes, and to let
only the last of a burst of requests through.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from rnri.api import Inversion
from rnri.counting import UNetCalls, count_unet_calls
from rnri.images import to_rgb

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
METHOD_OPTIONS = {"rnri": ("iterations", "prior_weight"), "fixed-point": ("iterations",), "ddim": ()}


class InputError(ValueError):
    """Input the editor cannot use (a bad upload, an empty prompt, a setting out of range); says why, in words."""


@dataclass(frozen=True)
class Photo:
    """A checked upload, ready to invert."""

    image: Image.Image  # 8-bit RGB, upright, sides from MIN_SIDE to MAX_SIDE
    digest: str  # hash of the pixels: the image part of an inversion's cache key
    notices: tuple[str, ...] = ()  # what was changed on the way in, for the user


def load_photo(path: str | Path | None) -> Photo:
    """Open, check and normalise an uploaded image file; ``InputError`` says what is wrong with a bad one."""
    if path is None:
        raise InputError("Upload a photo first.")
    image = _open(Path(path))
    notices = []
    if getattr(image, "n_frames", 1) > 1:
        notices.append(f"The file is animated ({image.n_frames} frames); its first frame was used.")
    orientation, mode = _orientation(image), image.mode
    if mode == "P" and "transparency" in image.info:
        mode = "PA"  # a palette with a transparent entry: to_rgb flattens it like an alpha channel
    if max(image.size) > MAX_SIDE and image.format == "JPEG":
        image.draft(image.mode, (MAX_SIDE, MAX_SIDE))  # decode at 1/2, 1/4 or 1/8 scale: fast and light
    rgb = _decode(image)
    if orientation not in (1, None):
        notices.append(f"Rotated upright as its EXIF orientation ({orientation}) says.")
    if mode != "RGB":
        notices.append(MODE_NOTES.get(mode, f"The image is in colour mode {mode}; it was converted to RGB."))
    rgb, resized = _fit(rgb)
    notices += resized
    return Photo(rgb, _digest(rgb), tuple(notices))


def _open(path: Path) -> Image.Image:
    """The image's header, after refusing non-images and decompression bombs (nothing is decoded yet)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # refused below, with our message
            image = Image.open(path)
    except Image.DecompressionBombError as error:
        raise InputError(f"The image is too large to open safely ({error}).") from error
    except UnidentifiedImageError as error:
        raise InputError(
            f"{path.name!r} is not an image this editor can read (JPEG, PNG, WebP, GIF, BMP or TIFF)."
        ) from error
    except OSError as error:
        raise InputError(f"The upload could not be read ({error}).") from error
    width, height = image.size
    if width * height > MAX_PIXELS:
        image.close()
        raise InputError(
            f"The image is {width}x{height} pixels ({width * height / 1e6:.0f} megapixels); images over "
            f"{MAX_PIXELS / 1e6:.0f} megapixels are refused (a decompression bomb looks like this). "
            "Downscale it and upload again."
        )
    if min(width, height) < MIN_SIDE:
        image.close()
        raise InputError(
            f"The image is only {width}x{height} pixels; it needs at least {MIN_SIDE} pixels on each side."
        )
    return image


def _orientation(image: Image.Image) -> int | None:
    try:
        return image.getexif().get(EXIF_ORIENTATION)
    except Exception:  # a broken EXIF block is no reason to refuse the photo; it is then used as stored
        return None


def _decode(image: Image.Image) -> Image.Image:
    """Decode the pixels and bring them to upright 8-bit RGB; a truncated or damaged file is a ``InputError``."""
    with image:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                image.load()
        except Exception as error:  # Pillow raises OSError, SyntaxError, ValueError or zlib errors for bad data
            raise InputError(
                f"The image file is truncated or damaged and could not be decoded ({type(error).__name__}: {error})."
            ) from error
        try:
            return to_rgb(image)
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


class InversionCache:
    """A least-recently-used map from ``InversionKey`` to ``CachedInversion``, bounded in entries; thread-safe."""

    def __init__(self, capacity: int = 16) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self._entries: OrderedDict[InversionKey, CachedInversion] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: InversionKey) -> CachedInversion | None:
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
            return self._entries.get(key)

    def put(self, key: InversionKey, value: CachedInversion) -> None:
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)

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
