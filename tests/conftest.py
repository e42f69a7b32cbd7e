"""Shared fixtures: the tiny pipeline (built once per session) and small test images."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import LCMScheduler
from PIL import Image

import rnri
from rnri.adapter import lcm_steps


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
