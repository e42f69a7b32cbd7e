"""Suggested source captions: when a photo arrives and the source prompt is empty, the editor proposes what the photo
shows, for the person to keep, edit or clear (never forced on them).

Two captioners. A transformers image-to-text model that captions a photo unprompted (BLIP base,
``Salesforce/blip-image-captioning-base``, by default), loaded as the main model is: safetensors only, never remote
code, once per process, resident on the pipeline's device and dtype. And, for the tiny shapes models, the shapes
world's exact analyzer (``rnri.shapes.analyze``), which writes the caption in the model's own grammar ("a large red
circle on a blue background"). When the model cannot be had, there are no suggestions and one short note says why;
the field stays the person's.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from rnri.core.options import option
from rnri.editor.models import load_reason, no_loading_bars
from rnri.editor.uploads import Photo, clean_prompt
from rnri.pipelines.loading import TINY, TINY_TEACHER
from rnri.pipelines.spaces_support import gpu_task
from rnri.shapes.analyze import described

log = logging.getLogger(__name__)
CAPTION_MODEL = "Salesforce/blip-image-captioning-base"  # what "auto" loads for every model but the shapes ones
AUTO, SHAPES, NONE = "auto", "shapes", "none"
SHAPES_MODELS = (TINY, TINY_TEACHER)  # trained on the shapes world: its analyzer reads their pictures exactly
MAX_NEW_TOKENS = 30  # a caption, not a paragraph (BLIP's own are about 10 tokens)
HUB_TIMEOUT_S = 10  # seconds to wait for the Hub to say the model exists before downloading it
CAPTION_LEASE_S = 10  # ZeroGPU seconds for one caption: a vision encoder and 30 decoder steps, a blink on a GPU
Describe = Callable[[Image.Image], str | None]  # a photo -> its caption, None when there is none to give


@dataclass(frozen=True)
class CaptionOptions:
    """How the editor proposes a source prompt (a front end's flag, made from this description)."""

    captioner: str = option(
        AUTO,
        "Caption model",
        "Proposes the source prompt when a photo arrives: auto (the shapes analyzer on the tiny models, else BLIP "
        "base), shapes, none, or a Hub id or folder of a transformers image-captioning model (safetensors).",
        flag="--captioner",
    )


@dataclass(frozen=True)
class Suggestion:
    """A proposed source prompt, or a note on why there is none."""

    text: str | None  # the proposal; None: leave the field as it is
    note: str | None = None  # one short line for the page where suggestions are off or failed


class ImageCaptioner:
    """A transformers image-to-text model captioning a photo unprompted, greedily (the same photo, the same words)."""

    def __init__(self, processor: Any, model: Any) -> None:
        self.processor, self.model = processor, model
        self._lock = threading.Lock()  # one generation at a time

    @torch.no_grad()
    def __call__(self, image: Image.Image) -> str | None:
        pixels = self.processor(images=image.convert("RGB"), return_tensors="pt")["pixel_values"]
        with self._lock:
            ids = self.model.generate(
                pixel_values=pixels.to(device=self.model.device, dtype=self.model.dtype),
                max_new_tokens=MAX_NEW_TOKENS,
                do_sample=False,
            )
        return self.processor.batch_decode(ids, skip_special_tokens=True)[0].strip() or None


_RESIDENT: dict[tuple[str, str, torch.dtype], ImageCaptioner] = {}
_LOCK = threading.Lock()


def load_image_captioner(model: str, device: torch.device | str, dtype: torch.dtype) -> ImageCaptioner:
    """The captioning model ``model`` (Hub id or folder), loaded once per (model, device, dtype) and kept: safetensors
    weights only, no remote code. Raises what the loaders raise when it cannot be had."""
    key = (model, str(device), dtype)
    with _LOCK:
        if key not in _RESIDENT:
            with no_loading_bars():
                processor, network = _cached_or_downloaded(model, dtype)
            _RESIDENT[key] = ImageCaptioner(processor, network.requires_grad_(False).eval().to(device))
        return _RESIDENT[key]


def _cached_or_downloaded(model: str, dtype: torch.dtype) -> tuple[Any, Any]:
    """The processor and model from the local cache (or folder), else from the Hub; an unreachable Hub fails in one
    request, not after the download helpers' minutes of retries per file."""
    from huggingface_hub import HfApi
    from transformers import AutoModelForImageTextToText, AutoProcessor

    def load(local: bool) -> tuple[Any, Any]:
        processor = AutoProcessor.from_pretrained(model, local_files_only=local)
        options = {"dtype": dtype, "use_safetensors": True, "local_files_only": local}
        return processor, AutoModelForImageTextToText.from_pretrained(model, **options)

    try:
        return load(local=True)
    except Exception:
        if Path(model).expanduser().exists():
            raise  # a folder: its own error says what is wrong with it
        HfApi().model_info(model, timeout=HUB_TIMEOUT_S)
        return load(local=False)


@dataclass(frozen=True)
class Captioning:
    """The editor's captioner, resident, or why there is none: ``suggest`` is what a page calls on a new photo."""

    describe: Describe | None  # None: suggestions are off
    name: str  # what writes the captions: a model id, "shapes" or "none"
    note: str | None = None  # why suggestions are off (None when they are on, or were turned off on purpose)

    def suggest(self, photo: Photo, current: str = "") -> Suggestion:
        """A caption for ``photo`` when ``current`` (the source prompt as it stands) is empty; a person's own
        prompt is never replaced. A captioner that fails gives a note, never an error."""
        if current.strip():
            return Suggestion(None)
        if self.describe is None:
            return Suggestion(None, self.note)
        try:
            text = self.describe(photo.image)
        except Exception as error:  # a caption is a convenience: no failure of it may stop an edit
            log.warning("the caption model %s failed: %s", self.name, error)
            return Suggestion(None, f"No caption suggested: the caption model failed ({type(error).__name__}).")
        if text is None:
            return Suggestion(None, f"No caption suggested: {self._nothing}; describe the photo yourself.")
        return Suggestion(clean_prompt(text, "suggested caption"))

    @property
    def _nothing(self) -> str:
        if self.name == SHAPES:
            return "the shapes analyzer found no shape on a background of the shapes world"
        return "the caption model proposed nothing"


def open_captioning(captioner: str, model: str, pipe: Any) -> Captioning:
    """The captioner ``captioner`` names (:class:`CaptionOptions`) for a front end running ``model`` on ``pipe``:
    "auto" is the shapes analyzer on the shapes models, else BLIP base. A captioning model goes on the pipeline's
    device in its dtype; when it cannot be loaded, suggestions are off with a one-line note (logged once)."""
    if captioner == AUTO:
        captioner = SHAPES if model in SHAPES_MODELS else CAPTION_MODEL
    if captioner == NONE:
        return Captioning(None, NONE)
    if captioner == SHAPES:
        return Captioning(described, SHAPES)
    try:
        loaded = load_image_captioner(captioner, pipe._execution_device, pipe.dtype)
    except Exception as error:  # offline, no safetensors, not a captioning model: the field stays manual
        why = load_reason(captioner, error, "captioning model")
        note = f"No caption suggestions: could not load {captioner} ({why})."
        log.warning("%s", note)
        return Captioning(None, captioner, note)
    return Captioning(gpu_task(loaded.__call__, duration=CAPTION_LEASE_S), captioner)
