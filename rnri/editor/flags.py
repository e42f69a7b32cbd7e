"""The model and speed flags both front ends take (``python app.py`` and the ``rnri`` commands), described once: the
flag, its help, its choices, and the environment variable the app reads it from (a server is often configured by
its environment: Docker, Spaces)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rnri.editor.process import LEVELS

MODEL_KINDS = "an LCM, Stable Diffusion (1.5, 2.x, XL), Turbo or FLUX.1 model"
SWITCH_ON = ("1", "true", "yes", "on")  # what an environment variable says to turn a switch on


@dataclass(frozen=True)
class Flag:
    """One flag: ``kind`` "text", "switch" (off unless given) or "choice" (of ``choices``; ``default`` unless
    given)."""

    name: str
    help: str
    env: str
    kind: str = "text"
    choices: tuple[str, ...] = ()
    default: str | None = None

    @property
    def dest(self) -> str:
        return self.name.removeprefix("--").replace("-", "_")


def model_flags() -> tuple[Flag, ...]:
    """The flags of the model and its speed; the offload's choices are the fast path's (imported when asked)."""
    from rnri.pipelines.gpu import OFFLOAD_CHOICES

    return (
        Flag("--model", f"Hub id or folder of {MODEL_KINDS}, or 'tiny', built in (no download)", "RNRI_MODEL"),
        Flag("--lora", "an LCM-LoRA (Hub id or folder) fused into the model, with LCMScheduler", "RNRI_LORA"),
        Flag("--compile", "torch.compile the UNet (a slower start, faster edits; GPUs)", "RNRI_COMPILE",
             "switch"),
        Flag("--channels-last", "channels-last weights (GPU convolutions)", "RNRI_CHANNELS_LAST", "switch"),
        Flag("--offload", "model CPU offload for small GPUs (auto: on below 6 GiB)", "RNRI_OFFLOAD", "choice",
             OFFLOAD_CHOICES, "auto"),
        Flag("--log-level", "what rnri logs", "RNRI_LOG_LEVEL", "choice", LEVELS, "warning"),
    )  # fmt: skip


def add_model_flags(
    p: Any, environ: Mapping[str, str] | None = None, model: str | None = None, model_default: str | None = None
) -> None:
    """Add each of :func:`model_flags` to ``p`` (a parser or one of its groups). With ``environ`` (the app), each not
    given on the command line is read from its environment variable, which its help names. ``model``: the model's
    default value (None: resolved later, as the CLI does); ``model_default``: how its help says the default."""
    for flag in model_flags():
        value = environ.get(flag.env) if environ is not None else None
        default = value if value is not None else (model if flag.dest == "model" else flag.default)
        said = f"; {flag.env}" if environ is not None else ""
        if flag.kind == "switch":
            on = value is not None and value.strip().lower() in SWITCH_ON
            p.add_argument(flag.name, action="store_true", default=on, help=f"{flag.help} (off{said})")
        elif flag.kind == "choice":
            p.add_argument(flag.name, choices=flag.choices, default=default, help=f"{flag.help} (%(default)s{said})")
        else:
            shown = model_default if flag.dest == "model" and model_default else ("%(default)s" if default else "none")
            p.add_argument(flag.name, default=default, metavar=flag.dest.upper(), help=f"{flag.help} ({shown}{said})")
