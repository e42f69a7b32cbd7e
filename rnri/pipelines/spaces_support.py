"""Hugging Face Spaces support: ZeroGPU's ``spaces.GPU`` where the ``spaces`` package is installed, else nothing.

ZeroGPU lends a GPU only while a function decorated with ``spaces.GPU`` runs; elsewhere (a laptop, Docker, a
Space on fixed hardware) the decorator changes nothing. Import this module before anything touches CUDA.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

try:  # the Spaces runtime installs it; nowhere else needs it
    import spaces
except ImportError:
    spaces = None

F = TypeVar("F", bound=Callable[..., Any])
GPU_SECONDS = 30  # ZeroGPU's lease per call where no better estimate is given; a shorter lease queues sooner


def gpu_task(fn: F | None = None, *, duration: int | Callable[..., int] = GPU_SECONDS) -> F | Callable[[F], F]:
    """``spaces.GPU(duration=...)`` when ``spaces`` is importable, the identity otherwise; bare or with arguments.
    ``duration`` may be a callable of ``fn``'s arguments giving the seconds (ZeroGPU's dynamic duration)."""

    def decorate(f: F) -> F:
        return f if spaces is None else spaces.GPU(f, duration=duration)

    return decorate if fn is None else decorate(fn)


def on_spaces() -> bool:
    """Whether this process runs on a Hugging Face Space (the runtime sets ``SPACE_ID``)."""
    return bool(os.environ.get("SPACE_ID"))


def on_zero_gpu() -> bool:
    """Whether this Space runs on ZeroGPU (no torch.compile there: its workers do not keep compiled code)."""
    return os.environ.get("SPACES_ZERO_GPU", "").lower() in ("1", "true")


def example_caching() -> dict[str, Any]:
    """Keyword arguments of ``gr.Examples`` for example caching that suits where the app runs.

    On a Space: cached lazily, on the first click, so start-up is not spent (nor ZeroGPU quota) on examples
    nobody clicks. Elsewhere: not cached, so a local start is instant and writes no cache folder.
    """
    if on_spaces():
        return {"cache_examples": True, "cache_mode": "lazy"}
    return {"cache_examples": False}
