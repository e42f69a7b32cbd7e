"""Training data: renders as tensors, captions as token ids, all from seeded scene lists."""

from __future__ import annotations

import numpy as np
import torch
from transformers import CLIPTokenizer

from rnri.shapes.render import render
from rnri.shapes.world import Scene


def pixels(scene_list: list[Scene]) -> torch.Tensor:
    """Renders as uint8 (N, 3, 64, 64)."""
    return (
        torch.from_numpy(np.stack([np.asarray(render(s).image) for s in scene_list])).permute(0, 3, 1, 2).contiguous()
    )


def to_unit(batch: torch.Tensor) -> torch.Tensor:
    """uint8 pixels to float in [-1, 1], as diffusers' image processor gives the VAE."""
    return batch.float() / 127.5 - 1.0


def token_ids(tokenizer: CLIPTokenizer, captions: list[str]) -> torch.Tensor:
    """Token ids (N, max_length), padded as the stock pipelines pad them."""
    return tokenizer(
        captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids
