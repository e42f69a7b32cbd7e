"""Shared fixtures: the tiny pipeline (built once per session), small test images, and the app served locally."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: see rnri.editor.share_cpu_politely
# Tests are offline: huggingface_hub reads this once, when first imported (by diffusers, below), so it is set first;
# a test of the path where the Hub is out of reach sets it back or starts a subprocess without it (test_console.py).
os.environ["HF_HUB_OFFLINE"] = "1"

import importlib
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import LCMScheduler
from PIL import Image

import rnri
from rnri.pipelines.adapter import lcm_steps

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def pipe():
    """The tiny LCM pipeline, resident on the CPU."""
    return rnri.load_pipeline("tiny", device="cpu")


@pytest.fixture(scope="session")
def steps():
    """The 4-step LCM chain of Stable Diffusion's schedule: timesteps [999, 759, 499, 259]."""
    return lcm_steps(LCMScheduler(), 4)


def noise_image(width: int, height: int, mode: str = "RGB", seed: int = 0) -> Image.Image:
    """A seeded random image of the given size and mode."""
    rng = np.random.default_rng(seed)
    return Image.fromarray((rng.random((height, width, 3)) * 255).astype(np.uint8), "RGB").convert(mode)


@pytest.fixture
def image() -> Image.Image:
    return noise_image(70, 50)


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)


def import_app():
    """``app`` on the tiny model (the module loads its pipeline and builds its page when imported)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RNRI_MODEL", "tiny")
        mp.syspath_prepend(str(ROOT))
        return importlib.import_module("app")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app():
    # One intra-op thread: on shared 2-vCPU machines two OpenMP threads can make each tiny UNet call 100x slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield import_app()
    torch.set_num_threads(threads)


def serve(app, demo) -> str:
    """Serve ``demo`` on a free local port, as ``python app.py`` does, without blocking; its URL."""
    return app.launch(demo, "127.0.0.1", free_port(), block=False)


@pytest.fixture(scope="module")
def url(app):
    yield serve(app, app.demo)
    app.demo.close()
