"""Image metrics of PIE-Bench and of reconstruction, from torchmetrics; the model-based ones only where loadable.

Conventions follow PIE-Bench's ``evaluation/matrics_calculator.py`` (Ju et al., ICLR 2024) so numbers compare:
PSNR, SSIM and MSE on [0, 1] images; LPIPS (SqueezeNet) on [-1, 1]; background metrics on both images multiplied
by ``1 - mask``; CLIP score (``100 * max(cos, 0)``, ViT-L/14) on 0-255 images, the edited part by ``image * mask``;
structure distance as the MSE between the self-similarities of DINO ViT-B/8 keys of the last block.
A model whose weights are not on this machine is skipped, by name and with the reason, never silently dropped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure
from torchmetrics.functional.regression import mean_squared_error

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LPIPS_WEIGHTS = {  # torchvision's backbone checkpoints that torchmetrics' LPIPS loads (it ships the linear heads)
    "squeeze": "squeezenet1_1-b8a52dc0.pth",
    "alex": "alexnet-owt-7be5be79.pth",
    "vgg": "vgg16-397923af.pth",
}


@dataclass(frozen=True)
class MetricConfig:
    """Which metric models to use; Hub ids are read from the local cache only, never downloaded."""

    lpips_net: str = "squeeze"  # PIE-Bench's LPIPS backbone
    clip_model: str = "openai/clip-vit-large-patch14"  # PIE-Bench's CLIP; a Hub id (cached) or a local folder
    dino_model: str = "facebook/dino-vitb8"  # PIE-Bench's DINO ViT-B/8 (Hub port of torch.hub dino_vitb8)
    device: str = "cpu"


@dataclass
class MetricModels:
    """The loaded metric models (None where skipped) and, per skipped metric, why."""

    lpips: Any = None
    clip: Any = None
    dino: Any = None
    skipped: dict[str, str] = field(default_factory=dict)


def _why(error: BaseException) -> str:
    return f"{type(error).__name__}: {str(error).strip().splitlines()[0][:200] if str(error).strip() else ''}"


def load_lpips(net: str, device: str) -> Any:
    """torchmetrics' LPIPS, only if torchvision and its backbone weights are here (no download is tried)."""
    weights = Path(torch.hub.get_dir()) / "checkpoints" / LPIPS_WEIGHTS[net]
    if not weights.is_file():
        raise FileNotFoundError(f"backbone weights {weights} not found (torchvision's {net} checkpoint)")
    from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity  # needs torchvision

    return LearnedPerceptualImagePatchSimilarity(net_type=net).to(device).eval()


@dataclass(frozen=True)
class Clip:
    """A CLIP model and its processor."""

    model: Any
    processor: Any


def load_clip(name: str, device: str) -> Clip:
    """A CLIP model and processor read from the local cache or folder only."""
    from transformers import CLIPModel, CLIPProcessor

    model = CLIPModel.from_pretrained(name, local_files_only=True).to(device).eval()
    return Clip(model, CLIPProcessor.from_pretrained(name, local_files_only=True))


def load_dino(name: str, device: str) -> Any:
    """A DINO ViT (transformers ``ViTModel``) read from the local cache or folder only."""
    from transformers import ViTModel

    return ViTModel.from_pretrained(name, local_files_only=True, add_pooling_layer=False).to(device).eval()


def load_metric_models(config: MetricConfig, wanted: tuple[str, ...]) -> MetricModels:
    """Load the ``wanted`` model-based metrics (``lpips``, ``clip``, ``structure_distance``), skipping what fails."""
    models = MetricModels()
    loaders = {
        "lpips": ("lpips", lambda: load_lpips(config.lpips_net, config.device), f"LPIPS ({config.lpips_net})"),
        "clip": ("clip", lambda: load_clip(config.clip_model, config.device), config.clip_model),
        "structure_distance": ("dino", lambda: load_dino(config.dino_model, config.device), config.dino_model),
    }
    for metric in wanted:
        attribute, load, what = loaders[metric]
        try:
            setattr(models, attribute, load())
        except Exception as error:  # missing package, missing weights, bad folder: all mean "skip, and say why"
            models.skipped[metric] = f"{what}: {_why(error)}"
    return models


def to_tensor(image: Image.Image) -> torch.Tensor:
    """An RGB PIL image as a float tensor (3, H, W) in [0, 1]."""
    return torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0).permute(2, 0, 1)


def pixel_metrics(a: torch.Tensor, b: torch.Tensor, keep: torch.Tensor | None = None) -> dict[str, float]:
    """PSNR, SSIM and MSE of images (3, H, W) in [0, 1], both multiplied by ``keep`` (H, W) when given."""
    if keep is not None:
        a, b = a * keep, b * keep
    a, b = a[None], b[None]
    return {
        "psnr": peak_signal_noise_ratio(a, b, data_range=1.0).item(),
        "ssim": structural_similarity_index_measure(a, b, data_range=1.0).item(),
        "mse": mean_squared_error(a.flatten(), b.flatten()).item(),
    }


@torch.no_grad()
def lpips_distance(lpips: Any, a: torch.Tensor, b: torch.Tensor, keep: torch.Tensor | None = None) -> float:
    """LPIPS between images (3, H, W) in [0, 1], both multiplied by ``keep`` when given."""
    if keep is not None:
        a, b = a * keep, b * keep
    device = next(lpips.parameters()).device
    return lpips(a[None].to(device) * 2 - 1, b[None].to(device) * 2 - 1).item()


def _features(output: Any) -> torch.Tensor:
    return output if isinstance(output, torch.Tensor) else output.pooler_output  # transformers 5 returns an output


@torch.no_grad()
def clip_score(clip: Clip, image: torch.Tensor, text: str, mask: torch.Tensor | None = None) -> float:
    """CLIP score ``100 * max(cos(image, text), 0)`` of an image (3, H, W) in [0, 1], times ``mask`` when given.

    The definition of torchmetrics' ``CLIPScore``, which PIE-Bench uses; computed here because torchmetrics 1.9's
    implementation does not accept transformers 5's feature outputs.
    """
    pixels = (image * 255).round()
    if mask is not None:
        pixels = pixels * mask
    picture = Image.fromarray(pixels.to(torch.uint8).permute(1, 2, 0).numpy(), "RGB")
    inputs = clip.processor(text=[text], images=[picture], return_tensors="pt", padding=True, truncation=True)
    inputs = inputs.to(clip.model.device)
    image_emb = F.normalize(_features(clip.model.get_image_features(pixel_values=inputs["pixel_values"])), dim=-1)
    text_emb = F.normalize(
        _features(
            clip.model.get_text_features(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
        ),
        dim=-1,
    )
    return max(100.0 * (image_emb * text_emb).sum().item(), 0.0)


def _keys_self_similarity(dino: Any, image: torch.Tensor) -> torch.Tensor:
    """Cosine self-similarity (T, T) of the last block's attention keys, all heads concatenated (CLS included)."""
    layer = dino.layers[-1] if hasattr(dino, "layers") else dino.encoder.layer[-1]
    attention = layer.attention
    key_proj = attention.k_proj if hasattr(attention, "k_proj") else attention.attention.key
    captured = []
    handle = key_proj.register_forward_hook(lambda module, args, out: captured.append(out))
    try:
        dino(pixel_values=image[None], interpolate_pos_encoding=True)
    finally:
        handle.remove()
    keys = F.normalize(captured[0][0], dim=-1)  # (T, heads * head_dim)
    return keys @ keys.T


def _dino_input(image: torch.Tensor, device: torch.device) -> torch.Tensor:
    """PIE-Bench's DINO input: 0-255 values (their code does not rescale), shorter side 224 (longer <= 480), then
    ImageNet normalisation."""
    h, w = image.shape[-2:]
    scale = 224 / min(h, w)
    if max(h, w) * scale > 480:
        scale = 480 / max(h, w)
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    resized = F.interpolate(image[None] * 255, size=size, mode="bilinear", antialias=True, align_corners=False)[0]
    mean = torch.tensor(IMAGENET_MEAN)[:, None, None]
    std = torch.tensor(IMAGENET_STD)[:, None, None]
    return ((resized - mean) / std).to(device)


@torch.no_grad()
def structure_distance(dino: Any, a: torch.Tensor, b: torch.Tensor) -> float:
    """MSE between DINO key self-similarities of two images (3, H, W) in [0, 1] (Tumanyan et al.; PIE-Bench)."""
    device = next(dino.parameters()).device
    sim_a = _keys_self_similarity(dino, _dino_input(a, device))
    sim_b = _keys_self_similarity(dino, _dino_input(b, device))
    return F.mse_loss(sim_b, sim_a).item()


def nan_mean(values: list[float]) -> float:
    """Mean of the finite values (NaN when there are none); PSNR of identical images (inf) is left out."""
    finite = [v for v in values if isinstance(v, float) and math.isfinite(v)]
    return sum(finite) / len(finite) if finite else math.nan
