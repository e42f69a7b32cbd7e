"""Opening the model a front end runs on: load it, apply the fast path, and when it cannot be had, say why in one
line and what to do, in the front end's own terms (``--model``), instead of the loaders' walls of text."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rnri.gpu import FastPath, FastPathError, apply_fast_path
from rnri.loading import TINY, ModelLoadError, load_pipeline

log = logging.getLogger(__name__)
WAYS_OUT = (
    "connect to the internet once so the weights are cached (about 2 GB), pass a local folder in diffusers layout "
    "with .safetensors weights (--model /path/to/model), or run the tiny demo model (--model tiny)"
)


@dataclass(frozen=True)
class Resident:
    """The pipeline a front end runs on; ``failure`` says why it is not the one asked for (None when it is)."""

    pipe: Any  # a diffusers LatentConsistencyModelPipeline
    model: str  # what runs: the model asked for, or "tiny"
    asked: str  # the model asked for
    failure: str | None = None  # why ``asked`` could not be loaded, and the ways out
    notes: list[str] = field(default_factory=list)  # what the fast path did or skipped


def open_model(
    model: str, device: str | None = None, fast: FastPath | None = None, fallback: bool = False
) -> Resident:
    """Load ``model`` and apply the fast path; with ``fallback``, the tiny model when ``model`` cannot be loaded
    (else ``ModelLoadError`` with the short reason)."""
    try:
        pipe, running = load_pipeline(model, device=device), model
    except Exception as error:  # ModelLoadError above all, but no loading failure may stop the app starting
        failure = load_failure(model, error)
        if not fallback:
            raise ModelLoadError(failure) from error
        log.warning("%s; running on the tiny demo model", failure)
        pipe, running = load_pipeline(TINY, device=device), TINY
    else:
        failure = None
    notes = speed_up(pipe, fast or FastPath())
    return Resident(pipe, running, model, failure, notes)


def speed_up(pipe: Any, fast: FastPath) -> list[str]:
    """Apply the fast path's knobs; what took effect and what was skipped, in words (nothing fails here but
    compiling, whose error says how to run without it)."""
    try:
        done = apply_fast_path(pipe, fast)
    except FastPathError:
        raise  # compiling failed; its message says how to run without it
    except (ImportError, RuntimeError) as error:  # offload without accelerate, for one
        log.warning("the fast path could not be applied, running without it: %s", error)
        return [f"fast path not applied: {error}"]
    log.info("fast path: %s", ", ".join(done.applied))
    return [f"skipped {reason}" for reason in done.skipped]


def load_failure(model: str, error: BaseException) -> str:
    """Why ``model`` could not be loaded, in one line, and the ways out."""
    return f"could not load the model {model!r}: {_reason(model, error)}; {WAYS_OUT}"


def _reason(model: str, error: BaseException) -> str:
    cause = error.__cause__ or error
    text = str(cause)
    if Path(model).expanduser().exists():
        return f"the folder holds no diffusers pipeline with .safetensors weights ({_first_sentence(text)})"
    if model.startswith(("/", ".", "~")) or "\\" in model:
        return "there is no such folder"
    if "not fully cached" in text or "connect" in text.lower():
        return "it is not in the local Hugging Face cache and the Hub cannot be reached"
    return f"{type(cause).__name__}: {_first_sentence(text)}"


def _first_sentence(text: str) -> str:
    first = re.split(r"(?<=[.!?])\s", text.strip(), maxsplit=1)[0]
    return first.rstrip(".")
