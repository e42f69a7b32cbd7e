"""Opening the model a front end runs on: load it, apply the fast path, and when it cannot be had, say why in one
line and what to do, in the front end's own terms (``--model``), instead of the loaders' walls of text. Offline, that
is known at once: the Hub is tried once (:func:`hub_reachable`) and, unreachable, only the local cache is read, instead
of every file being retried for half a minute."""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from rnri.pipelines.gpu import FastPath, FastPathError, apply_fast_path
from rnri.pipelines.loading import BUILTIN_MODELS, RANDOM_MODELS, TINY, TINY_TEACHER, ModelLoadError, load_pipeline

log = logging.getLogger(__name__)
WAYS_OUT = (
    "connect to the internet once so the weights are cached (about 2 GB), pass a local folder in diffusers layout "
    "with .safetensors weights (--model /path/to/model), or run the tiny demo model (--model tiny)"
)
HUB_PROBE_S = 3.0  # how long the Hub's server has to take a connection before it counts as unreachable
PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")  # then the proxy decides: no probe


@dataclass(frozen=True)
class Limits:
    """What a model built into rnri can draw, for a banner and the report's words."""

    draws: str  # completes "this model ...": "only draws coloured shapes ..."
    otherwise: str  # what becomes of a photo outside that


SHAPES = Limits(
    "only draws coloured shapes on plain, striped or checkered backgrounds (the world it learned, rnri/shapes)",
    "any other photo comes back as coloured blobs",
)
NOISE = Limits("has random weights (an architecture for tests)", "every image it makes is noise")
LIMITS = {TINY: SHAPES, TINY_TEACHER: SHAPES} | dict.fromkeys(RANDOM_MODELS, NOISE)


@dataclass(frozen=True)
class Resident:
    """The pipeline a front end runs on; ``failure`` says why it is not the one asked for (None when it is)."""

    pipe: Any  # a stock diffusers pipeline of a backbone rnri runs on (rnri.pipelines.backbones)
    model: str  # what runs: the model asked for (with its LoRA: "MODEL + LORA"), or "tiny"
    asked: str  # the model asked for
    failure: str | None = None  # why ``asked`` could not be loaded, and the ways out
    notes: list[str] = field(default_factory=list)  # what the fast path did or skipped


def open_model(
    model: str,
    device: str | None = None,
    fast: FastPath | None = None,
    fallback: bool = False,
    lora: str | None = None,
) -> Resident:
    """Load ``model`` (with ``lora``, an LCM-LoRA fused into it) and apply the fast path; with ``fallback``, the tiny
    model when it cannot be loaded (else ``ModelLoadError`` with the short reason)."""
    asked = model if lora is None else f"{model} + {lora}"
    try:
        with no_loading_bars(), quiet_hub(model, lora):
            pipe, running = load_pipeline(model, device=device, lora=lora), asked
    except Exception as error:  # ModelLoadError above all, but no loading failure may stop the app starting
        failure = load_failure(model, error)
        if not fallback:
            raise ModelLoadError(failure) from error
        log.warning("%s; running on the tiny demo model", failure)
        with no_loading_bars():
            pipe, running = load_pipeline(TINY, device=device), TINY
    else:
        failure = None
    notes = speed_up(pipe, fast or FastPath())
    return Resident(pipe, running, asked, failure, notes)


@contextmanager
def no_loading_bars() -> Iterator[None]:
    """diffusers' and transformers' progress bars off while weights already on disk are read (a blink for the tiny
    model, and nothing the user waits on); a download keeps its bar (huggingface_hub's)."""
    from diffusers.utils import logging as diffusers_logging
    from huggingface_hub import utils as hub
    from transformers.utils import logging as transformers_logging

    libraries = (diffusers_logging, transformers_logging)
    enabled = [library.is_progress_bar_enabled() for library in libraries]
    downloads = not hub.are_progress_bars_disabled()
    for library in libraries:
        library.disable_progress_bar()  # transformers' turns huggingface_hub's off too
    if downloads:
        hub.enable_progress_bars()
    try:
        yield
    finally:
        for library, on in zip(libraries, enabled, strict=True):
            if on:
                library.enable_progress_bar()
        if not downloads:
            hub.disable_progress_bars()


def model_limits(model: str) -> Limits | None:
    """What ``model`` (a name ``open_model`` reports as running) can draw, when that is not photos: the tiny shapes
    models and the random-weight architectures; None for a model of real photos."""
    return LIMITS.get(model)


def from_hub(name: str | None) -> bool:
    """Whether loading ``name`` asks the Hub: not a model built from the package, not a folder here."""
    return name is not None and name not in BUILTIN_MODELS and not Path(name).expanduser().exists()


def hub_reachable(timeout: float = HUB_PROBE_S) -> bool:
    """Whether the Hugging Face Hub (``HF_ENDPOINT``) takes a connection within ``timeout`` seconds: False with
    ``HF_HUB_OFFLINE`` set, True behind a proxy (which alone knows). Name lookup and connection both count (a lookup
    that hangs is given up on)."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    if any(os.environ.get(name) for name in PROXY_VARIABLES):
        return True
    url = urlsplit(constants.ENDPOINT)
    address = (url.hostname or "", url.port or (443 if url.scheme == "https" else 80))
    answered: list[bool] = []

    def connect() -> None:
        try:
            socket.create_connection(address, timeout=timeout).close()
            answered.append(True)
        except OSError:
            answered.append(False)

    probe = threading.Thread(target=connect, daemon=True)
    probe.start()
    probe.join(timeout)
    return bool(answered and answered[0])


@contextmanager
def quiet_hub(model: str, lora: str | None = None) -> Iterator[None]:
    """Load without the Hub's noise: huggingface_hub's deprecation of an argument diffusers passes it (nothing a user
    can act on) is not shown, and when the Hub cannot be reached (:func:`hub_reachable`, asked once, only if ``model``
    or ``lora`` comes from it) its offline mode is on: files come from the local cache or fail at once, where each
    request was retried for half a minute, a warning per try."""
    from huggingface_hub import constants

    offline = constants.HF_HUB_OFFLINE
    if not offline and (from_hub(model) or from_hub(lora)) and not hub_reachable():
        log.info("the Hugging Face Hub cannot be reached: reading the local cache only")
        constants.HF_HUB_OFFLINE = True
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*local_dir_use_symlinks", category=UserWarning)
            yield
    finally:
        constants.HF_HUB_OFFLINE = offline


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
    return f"could not load the model {model!r}: {load_reason(model, error)}; {WAYS_OUT}"


def load_reason(model: str, error: BaseException, what: str = "diffusers pipeline") -> str:
    """Why ``model`` (a Hub id or folder of a ``what``) could not be loaded, in a few words."""
    cause = error.__cause__ or error
    text = str(cause)
    if Path(model).expanduser().exists():
        return f"the folder holds no {what} with .safetensors weights ({_first_sentence(text)})"
    if model.startswith(("/", ".", "~")) or "\\" in model:
        return "there is no such folder"
    causes = [f"{type(e).__name__}: {e}" for e in _causes(error)]  # the Hub's error sits below the loader's
    if any("not fully cached" in c or "LocalEntryNotFoundError" in c or "connect" in c.lower() for c in causes):
        return "it is not in the local Hugging Face cache and the Hub cannot be reached"
    return f"{type(cause).__name__}: {_first_sentence(text)}"


def _causes(error: BaseException | None) -> Iterator[BaseException]:
    """``error`` and what it was raised from or during, outermost first."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def _first_sentence(text: str) -> str:
    first = re.split(r"(?<=[.!?])\s", text.strip(), maxsplit=1)[0]
    return first.rstrip(".")
