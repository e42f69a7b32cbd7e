"""``python -m rnri_lab.bench.families``: what the default inversion of each backbone costs at real size.

Per backbone, a pipeline with the real UNet architecture and seeded random weights (cost does not depend on the
values): LCM_Dreamshaper_v7's (SD 1.5 with the LCM guidance embedding), Stable Diffusion 1.5's with DDIM,
SD-Turbo's (SD 2.1) with Euler and SDXL-Turbo's (SDXL) with Euler ancestral, each at 512x512 (64x64 latents) and
batch 1. It times one UNet forward (median of ``--repeats`` after a warm-up) and one inversion through
``rnri.invert`` at the backbone's defaults, counting UNet passes with hooks; forward-equivalents divide the
inversion's time by the forward's (CPU time on a CPU, wall time on a GPU). The text encoders have the real widths
but one layer, and the VAE is tiny: neither runs in an inversion from latents. ``--size tiny`` runs the same on the
tiny architectures (what the tests do); ``--strength`` inverts only the last steps of each chain, the same work per
step as the default inversion's, for the 50-step Stable Diffusion chain on a slow CPU.

FLUX.1-schnell (``flux-schnell``) is another matter: its transformer has 11.9 billion parameters, 48 GB in fp32, more
than such a machine holds, and CPU bf16 is slower still. So the real architecture is built on the meta device (no
memory) to count every component's parameters and weight memory; one double-stream and one single-stream block are
built at real width and timed at the real sequence length of the default (1024x1024: 4096 image tokens and 256 text
tokens), as is the transformer without its blocks; a forward is estimated as that plus 19 double and 38 single
blocks. The default inversion's transformer calls are counted by hooks on the tiny FLUX pipeline (the same chain and
solver: the count does not depend on width), and the inversion is estimated as that many forwards. Peak memory is the
bf16 weights plus the activations of one block's forward, measured in fp32 and halved.

Why one module of ~530 lines: one table per backbone family, each a few lines, measured by the same loop.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from diffusers import LatentConsistencyModelPipeline, StableDiffusionPipeline, StableDiffusionXLPipeline
from tqdm import tqdm

import rnri
from rnri.core.counting import count_unet_calls
from rnri.pipelines import adapter, flux
from rnri.pipelines.loading import (
    FLUX_MODELS,
    RANDOM_MODELS,
    TINY_FLUX_TRANSFORMER,
    TINY_FLUX_VAE,
    TINY_T5,
    TINY_TEXT,
    TINY_VAE,
    Architecture,
    build_flux,
    build_random,
    ddim_scheduler,
    euler_ancestral_scheduler,
    euler_scheduler,
    frozen_on,
    lcm_scheduler,
    random_tiny_pipeline,
)
from rnri_lab.bench.measure import Usage, add_run_arguments, measure, run_dtype
from rnri_lab.bench.realsize import LCM_DREAMSHAPER_V7_UNET

SD15_UNET = {k: v for k, v in LCM_DREAMSHAPER_V7_UNET.items() if k != "time_cond_proj_dim"}  # 860M
SD21_UNET = SD15_UNET | {  # stabilityai/stable-diffusion-2-1-base and sd-turbo, 866M
    "attention_head_dim": (5, 10, 20, 20),
    "cross_attention_dim": 1024,
    "use_linear_projection": True,
}
SDXL_UNET: dict[str, Any] = {  # stabilityai/stable-diffusion-xl-base-1.0 and sdxl-turbo, 2567M
    "sample_size": 128,
    "in_channels": 4,
    "out_channels": 4,
    "layers_per_block": 2,
    "block_out_channels": (320, 640, 1280),
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    "attention_head_dim": (5, 10, 20),
    "transformer_layers_per_block": (1, 2, 10),
    "cross_attention_dim": 2048,
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 2816,
    "norm_num_groups": 32,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
}


def text_encoder(width: int, heads: int, projection: int | None = None) -> dict[str, Any]:
    """A one-layer CLIP text encoder of the real width (its cost is not part of an inversion)."""
    config = {
        "hidden_size": width,
        "intermediate_size": 4 * width,
        "num_hidden_layers": 1,
        "num_attention_heads": heads,
    }
    return config | ({"projection_dim": projection} if projection else {})


REAL_SIZE: dict[str, Architecture] = {  # name -> architecture
    "lcm": Architecture(
        LatentConsistencyModelPipeline, LCM_DREAMSHAPER_V7_UNET, TINY_VAE, text_encoder(768, 12), lcm_scheduler
    ),
    "sd15": Architecture(StableDiffusionPipeline, SD15_UNET, TINY_VAE, text_encoder(768, 12), ddim_scheduler),
    "sd-turbo": Architecture(StableDiffusionPipeline, SD21_UNET, TINY_VAE, text_encoder(1024, 16), euler_scheduler),
    "sdxl-turbo": Architecture(
        StableDiffusionXLPipeline,
        SDXL_UNET,
        TINY_VAE,
        text_encoder(768, 12),
        euler_ancestral_scheduler,
        text_encoder(1280, 20, projection=1280),
    ),
}
LABELS = {  # name -> what it is, in the table
    "lcm": "lcm (LCM_Dreamshaper_v7)",
    "sd15": "stable-diffusion (SD 1.5, DDIM)",
    "sd-turbo": "turbo (SD-Turbo, Euler)",
    "sdxl-turbo": "turbo (SDXL-Turbo, Euler ancestral)",
}
TINY_NAMES = dict(zip(REAL_SIZE, ("tiny", "tiny-sd", "tiny-sd-turbo", "tiny-sdxl-turbo")))
PROMPT = "a photo of a cat sitting on a sofa"


@dataclass(frozen=True)
class FamiliesConfig:
    """Where and how the per-backbone cost is measured."""

    size: str = "real"  # "real" architectures, or "tiny" ones (tests)
    device: str = "cpu"
    dtype: str = "float32"  # "float16" on a GPU
    repeats: int = 2  # timings of the single forward; the median is reported
    seed: int = 0  # weights and latents
    families: tuple[str, ...] = tuple(REAL_SIZE)
    strength: float = 1.0  # the fraction of the default chain inverted (its last steps); 1 is the default inversion


@dataclass
class FamilyCost:
    """One backbone's default inversion at one size."""

    backbone: str
    chain: str
    parameters_millions: float  # of the UNet
    num_inference_steps: int
    inverted_steps: int  # all of them unless strength < 1 (then the last ones, the same work per step)
    guidance_scale: float  # of the inversion
    forwards: int  # UNet calls counted by hooks (a classifier-free-guided call is one batch of 2)
    backwards: int
    forward_s: float  # one UNet forward, wall
    forward_cpu_s: float  # and CPU time
    inversion_s: float  # the whole inversion, wall
    inversion_cpu_s: float
    forward_equivalents: float  # inversion / forward, in CPU time on a CPU and wall time on a GPU
    cfg_forward_equivalents: float | None  # one batch-2 CFG call at the backbone's edit guidance, where it has CFG
    peak_mib: float  # peak memory the inversion added


def build(name: str, config: FamiliesConfig) -> Any:
    """The backbone's pipeline at the configured size, frozen, on the device in the dtype."""
    if config.size == "tiny":
        tiny = TINY_NAMES[name]
        pipe = random_tiny_pipeline(config.seed) if tiny == "tiny" else build_random(RANDOM_MODELS[tiny], config.seed)
    else:
        pipe = build_random(REAL_SIZE[name], config.seed)
    return frozen_on(pipe, config.device, getattr(torch, config.dtype))


def _basis(usage: Usage, device: str) -> float:
    return usage.wall_s if torch.device(device).type == "cuda" else usage.cpu_s


def time_forward(eps_fn, z: torch.Tensor, t: int, config: FamiliesConfig) -> Usage:
    """Median wall and CPU time of ``repeats`` UNet calls after one warm-up."""
    with torch.no_grad():
        eps_fn(z, t)
        usages = []
        for _ in range(config.repeats):
            with measure(config.device) as usage:
                eps_fn(z, t)
            usages.append(usage)
    return Usage(statistics.median(u.wall_s for u in usages), statistics.median(u.cpu_s for u in usages))


def measure_family(name: str, config: FamiliesConfig, bar: tqdm) -> FamilyCost:
    """Build one backbone, time a forward (and a CFG forward), then its default inversion from random latents."""
    bar.set_description(f"{name}: building")
    pipe = build(name, config)
    backbone = rnri.backbone_of(pipe)
    side = 64 if config.size == "real" else 8
    z0 = torch.randn(1, 4, side, side, generator=torch.Generator().manual_seed(config.seed)).to(config.device)
    bar.set_description(f"{name}: one forward")
    first = adapter.chain_spec(pipe.scheduler, None).make_steps(pipe.scheduler, backbone.num_inference_steps)[0].t
    eps = adapter.prompt_eps_fn(pipe, PROMPT, backbone.inversion_guidance_scale, (side, side))
    forward = time_forward(eps, z0, first, config)
    cfg = None
    if not adapter.embeds_guidance(pipe) and backbone.guidance_scale > 1:
        batch2 = adapter.prompt_eps_fn(pipe, PROMPT, backbone.guidance_scale, (side, side))
        cfg = _basis(time_forward(batch2, z0, first, config), config.device) / _basis(forward, config.device)
    bar.set_description(f"{name}: inversion")
    bar.reset(total=max(1, round(config.strength * backbone.num_inference_steps)))
    with count_unet_calls(pipe.unet) as calls, measure(config.device) as usage:
        inv = rnri.invert(pipe, PROMPT, latents=z0, strength=config.strength, callback=lambda *_: bar.update())
    return FamilyCost(
        backbone=LABELS[name],
        chain=inv.chain,
        parameters_millions=sum(p.numel() for p in pipe.unet.parameters()) / 1e6,
        num_inference_steps=inv.num_inference_steps,
        inverted_steps=len(inv.timesteps),
        guidance_scale=inv.guidance_scale,
        forwards=calls.forwards,
        backwards=calls.backwards,
        forward_s=forward.wall_s,
        forward_cpu_s=forward.cpu_s,
        inversion_s=usage.wall_s,
        inversion_cpu_s=usage.cpu_s,
        forward_equivalents=_basis(usage, config.device) / _basis(forward, config.device),
        cfg_forward_equivalents=cfg,
        peak_mib=usage.peak_mib,
    )


def run(config: FamiliesConfig) -> list[FamilyCost]:
    """Every configured backbone, one after the other (each pipeline freed before the next is built)."""
    costs = []
    with tqdm(total=1, file=sys.stderr, unit="step") as bar:
        for name in config.families:
            costs.append(measure_family(name, config, bar))
            gc.collect()  # the pipeline just measured goes before the next is built
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    return costs


def _steps(cost: FamilyCost) -> str:
    if cost.inverted_steps == cost.num_inference_steps:
        return str(cost.num_inference_steps)
    return f"last {cost.inverted_steps} of {cost.num_inference_steps}"


def table(costs: list[FamilyCost], device: str, size: str = "real") -> str:
    """Markdown: per backbone, its default inversion in UNet calls, seconds and forward-equivalents."""
    basis = "wall" if torch.device(device).type == "cuda" else "CPU"
    lines = [
        f"{size} architectures, {'512x512 (64x64 latents)' if size == 'real' else '64x64 (8x8 latents)'}, batch 1, "
        f"{device}; forward-equivalents: the inversion's {basis} time over one forward's.",
        "",
        f"| backbone | chain | UNet M params | steps inverted | guidance | UNet calls (fwd+bwd) | "
        f"forward s ({basis}) | inversion s (wall / CPU) | forward-equivalents | CFG call (fwd-eq) | peak MiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in costs:
        cfg = f"{c.cfg_forward_equivalents:.2f}" if c.cfg_forward_equivalents is not None else "no CFG"
        forward = c.forward_s if basis == "wall" else c.forward_cpu_s
        lines.append(
            f"| {c.backbone} | `{c.chain}` | {c.parameters_millions:.3g} | {_steps(c)} | "
            f"{c.guidance_scale:g} | {c.forwards}+{c.backwards} | {forward:.2f} | {c.inversion_s:.0f} / "
            f"{c.inversion_cpu_s:.0f} | **{c.forward_equivalents:.1f}** | {cfg} | {c.peak_mib:.0f} |"
        )
    return "\n".join(lines)


# --- FLUX.1 at real size, block by block --------------------------------------------------------------------------

FLUX_TRANSFORMER: dict[str, Any] = TINY_FLUX_TRANSFORMER | {  # black-forest-labs/FLUX.1-schnell's transformer
    "num_layers": 19,  # double-stream blocks: image and text tokens each with their own weights, joint attention
    "num_single_layers": 38,  # single-stream blocks on the concatenated sequence
    "attention_head_dim": 128,
    "num_attention_heads": 24,  # width 3072
    "joint_attention_dim": 4096,  # T5-XXL's width
    "pooled_projection_dim": 768,  # CLIP ViT-L's
    "axes_dims_rope": (16, 56, 56),
}
T5_XXL: dict[str, Any] = TINY_T5 | {  # google/t5-v1_1-xxl's encoder, FLUX's text_encoder_2
    "vocab_size": 32128,
    "d_model": 4096,
    "d_ff": 10240,
    "d_kv": 64,
    "num_layers": 24,
    "num_heads": 64,
    "relative_attention_num_buckets": 32,
}
CLIP_L: dict[str, Any] = {  # openai/clip-vit-large-patch14's text encoder, FLUX's text_encoder
    "vocab_size": 49408,
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "max_position_embeddings": 77,
}
FLUX_VAE: dict[str, Any] = TINY_FLUX_VAE | {"block_out_channels": (128, 256, 512, 512), "layers_per_block": 2}


@dataclass(frozen=True)
class FluxSize:
    """FLUX's architecture at one size, as config keyword arguments, and the photo side it is measured at."""

    transformer: dict[str, Any]
    t5: dict[str, Any]
    clip: dict[str, Any]
    vae: dict[str, Any]
    side: int  # pixels


FLUX_SIZES = {  # --size: the real one at its default 1024 px; the tiny one (tests) at its 64
    "real": FluxSize(FLUX_TRANSFORMER, T5_XXL, CLIP_L, FLUX_VAE, 1024),
    "tiny": FluxSize(TINY_FLUX_TRANSFORMER, TINY_T5 | {"vocab_size": 192}, TINY_TEXT, TINY_FLUX_VAE, 64),
}


@dataclass
class FluxCost:
    """FLUX.1-schnell's default inversion at real size, from its parts."""

    backbone: str
    machine_dtype: str  # the dtype the blocks were timed in
    side: int  # pixels of the (square) photo
    image_tokens: int  # 2x2 latent patches
    text_tokens: int  # T5 tokens (schnell: 256)
    blocks: tuple[int, int]  # double- and single-stream blocks of the transformer
    parameters_millions: dict[str, float]  # per component, counted on the meta device
    weights_gib: dict[str, float]  # per component in bf16, as the pipeline loads on CUDA
    double_block_cpu_s: float  # one double-stream block's forward at full length, fp32, CPU time
    single_block_cpu_s: float
    outside_blocks_cpu_s: float  # the transformer without its blocks (embedders, final norm and projection)
    forward_cpu_s: float  # estimate: outside + 19 double + 38 single blocks
    forwards: int  # the default inversion's transformer calls, counted by hooks on tiny-flux
    backwards: int
    forward_equivalents: float  # forwards + 2 backwards (a backward costs about two forwards); the solver's own
    # arithmetic on a (1, 16, 128, 128) latent is negligible next to a 12-billion-parameter forward
    inversion_cpu_s: float  # estimate: forward_equivalents x forward_cpu_s
    block_activation_gib: float  # the largest block forward's added peak, fp32 measured, halved for bf16
    peak_gib: float  # estimate: all bf16 weights resident + one block's activations (no graph: no backward)


def parameters_on_meta(build: Callable[[], torch.nn.Module]) -> int:
    """Parameters of the module ``build`` makes, made on the meta device (no memory, no time)."""
    with torch.device("meta"):
        return sum(p.numel() for p in build().parameters())


def flux_parameters(size: FluxSize) -> dict[str, int]:
    """FLUX.1-schnell's components' parameter counts."""
    from diffusers import AutoencoderKL, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    return {
        "transformer": parameters_on_meta(lambda: FluxTransformer2DModel(**size.transformer)),
        "text_encoder_2 (T5)": parameters_on_meta(lambda: T5EncoderModel(T5Config(**size.t5))),
        "text_encoder (CLIP)": parameters_on_meta(lambda: CLIPTextModel(CLIPTextConfig(**size.clip))),
        "vae": parameters_on_meta(lambda: AutoencoderKL(**size.vae)),
    }


def flux_inputs(
    transformer: dict[str, Any], image_tokens: int, text_tokens: int, config: FamiliesConfig
) -> dict[str, torch.Tensor]:
    """Random inputs of one block: image and text hidden states, the time embedding, the rotary frequencies."""
    from diffusers.models.transformers.transformer_flux import FluxPosEmbed

    width = transformer["num_attention_heads"] * transformer["attention_head_dim"]
    g, dtype = torch.Generator().manual_seed(config.seed), getattr(torch, config.dtype)
    side = int(image_tokens**0.5)
    ids = torch.cat([torch.zeros(text_tokens, 3), flux.image_ids((2 * side, 2 * side), "cpu", torch.float32)])
    rotary = FluxPosEmbed(theta=10000, axes_dim=transformer["axes_dims_rope"])(ids)
    return {
        "hidden_states": torch.randn(1, image_tokens, width, generator=g).to(config.device, dtype),
        "encoder_hidden_states": torch.randn(1, text_tokens, width, generator=g).to(config.device, dtype),
        "temb": torch.randn(1, width, generator=g).to(config.device, dtype),
        "image_rotary_emb": tuple(r.to(config.device) for r in rotary),
    }


def time_block(block: torch.nn.Module, inputs: dict[str, torch.Tensor], config: FamiliesConfig) -> Usage:
    """One forward of ``block`` (after a warm-up on the first 64 text and image tokens), with the memory it added."""
    text = inputs["encoder_hidden_states"].shape[1]
    short = inputs | {
        "hidden_states": inputs["hidden_states"][:, :64],
        "encoder_hidden_states": inputs["encoder_hidden_states"][:, :64],
    }
    keep = torch.cat([torch.arange(min(64, text)), text + torch.arange(short["hidden_states"].shape[1])])
    short["image_rotary_emb"] = tuple(r[keep] for r in inputs["image_rotary_emb"])  # text tokens come first
    with torch.no_grad():
        block(**short)
        with measure(config.device) as usage:
            block(**inputs)
    return usage


def flux_blocks(size: FluxSize, config: FamiliesConfig, tokens: tuple[int, int]) -> tuple[Usage, Usage, Usage]:
    """One double-stream block, one single-stream block and the transformer without blocks, each built at the size's
    width and timed on ``tokens = (image, text)`` tokens."""
    from diffusers.models.transformers.transformer_flux import FluxSingleTransformerBlock, FluxTransformerBlock

    dtype, heads, head_dim = (getattr(torch, config.dtype), *(size.transformer[k] for k in FLUX_HEADS))
    inputs = flux_inputs(size.transformer, *tokens, config)
    timed = []
    for kind in (FluxTransformerBlock, FluxSingleTransformerBlock):
        torch.manual_seed(config.seed)
        block = kind(dim=heads * head_dim, num_attention_heads=heads, attention_head_dim=head_dim)
        timed.append(time_block(block.to(config.device, dtype), inputs, config))
        del block
        gc.collect()
    return timed[0], timed[1], time_outside_blocks(size, config, tokens)


FLUX_HEADS = ("num_attention_heads", "attention_head_dim")


def time_outside_blocks(size: FluxSize, config: FamiliesConfig, tokens: tuple[int, int]) -> Usage:
    """One forward of the transformer with no blocks: its embedders, final norm and projection."""
    from diffusers import FluxTransformer2DModel

    (image_tokens, text_tokens), dtype = tokens, getattr(torch, config.dtype)
    torch.manual_seed(config.seed)
    shell = FluxTransformer2DModel(**(size.transformer | {"num_layers": 0, "num_single_layers": 0}))
    shell = shell.to(config.device, dtype)
    side, g = int(image_tokens**0.5), torch.Generator().manual_seed(config.seed)
    kwargs = {
        "hidden_states": torch.randn(1, image_tokens, size.transformer["in_channels"], generator=g),
        "encoder_hidden_states": torch.randn(1, text_tokens, size.transformer["joint_attention_dim"], generator=g),
        "pooled_projections": torch.randn(1, size.transformer["pooled_projection_dim"], generator=g),
        "timestep": torch.ones(1),
        "img_ids": flux.image_ids((2 * side, 2 * side), "cpu", torch.float32),
        "txt_ids": torch.zeros(text_tokens, 3),
    }
    kwargs = {k: v.to(config.device, dtype) for k, v in kwargs.items()}
    with torch.no_grad(), measure(config.device) as usage:
        shell(**kwargs)
    return usage


def flux_inversion_calls(config: FamiliesConfig) -> tuple[int, int]:
    """The default inversion's transformer forwards and backwards, counted by hooks on the tiny FLUX pipeline."""
    pipe = frozen_on(build_flux(FLUX_MODELS["tiny-flux"], config.seed), "cpu", torch.float32)
    z0 = torch.randn(1, 16, 8, 8, generator=torch.Generator().manual_seed(config.seed))
    with count_unet_calls(pipe.transformer) as calls:
        rnri.invert(pipe, PROMPT, latents=z0)
    return calls.forwards, calls.backwards


def measure_flux(config: FamiliesConfig, bar: tqdm) -> FluxCost:
    """FLUX.1-schnell's default inversion at its default size, from its parts (see the module's docstring)."""
    from rnri.pipelines.backbones import FLUX_SCHNELL

    size = FLUX_SIZES[config.size]
    tokens = ((size.side // 16) ** 2, FLUX_SCHNELL.max_sequence_length)
    bar.set_description("flux-schnell: parameters")
    parameters = flux_parameters(size)
    bar.set_description("flux-schnell: one block of each kind")
    double, single, outside = flux_blocks(size, config, tokens)
    blocks = size.transformer["num_layers"] * double.cpu_s + size.transformer["num_single_layers"] * single.cpu_s
    forward = outside.cpu_s + blocks
    forwards, backwards = flux_inversion_calls(config)
    weights = {name: 2 * n / 2**30 for name, n in parameters.items()}
    scale = 0.5 if config.dtype == "float32" else 1.0  # fp32 activations measured, bf16 on CUDA
    activation = max(double.peak_mib, single.peak_mib) / 1024 * scale
    return FluxCost(
        backbone="flux-schnell (FLUX.1-schnell)",
        machine_dtype=config.dtype,
        side=size.side,
        image_tokens=tokens[0],
        text_tokens=tokens[1],
        blocks=(size.transformer["num_layers"], size.transformer["num_single_layers"]),
        parameters_millions={name: n / 1e6 for name, n in parameters.items()},
        weights_gib=weights,
        double_block_cpu_s=double.cpu_s,
        single_block_cpu_s=single.cpu_s,
        outside_blocks_cpu_s=outside.cpu_s,
        forward_cpu_s=forward,
        forwards=forwards,
        backwards=backwards,
        forward_equivalents=forwards + 2 * backwards,
        inversion_cpu_s=(forwards + 2 * backwards) * forward,
        block_activation_gib=activation,
        peak_gib=sum(weights.values()) + activation,
    )


def flux_table(cost: FluxCost) -> str:
    """Markdown: FLUX's row, with how each figure was had."""
    transformer = cost.parameters_millions["transformer"]
    return "\n".join(
        [
            f"FLUX.1-schnell at {cost.side}x{cost.side} ({cost.image_tokens} image + {cost.text_tokens} text tokens), "
            f"batch 1, {cost.machine_dtype}: parameters on the meta device; one block of each kind timed (CPU time) "
            f"and scaled by the block counts ({cost.blocks[0]} double, {cost.blocks[1]} single); calls counted on "
            "tiny-flux; memory: bf16 weights + one block's activations.",
            "",
            "| backbone | chain | transformer M params | all M params | steps | transformer calls (fwd+bwd) | "
            "double / single block s (CPU) | forward s (CPU, est.) | inversion s (CPU, est.) | forward-equivalents | "
            "bf16 weights GiB (transformer / all) | peak GiB (est.) |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
            f"| {cost.backbone} | `flow` | {transformer:.0f} | {sum(cost.parameters_millions.values()):.0f} | 4 | "
            f"{cost.forwards}+{cost.backwards} | {cost.double_block_cpu_s:.1f} / {cost.single_block_cpu_s:.1f} | "
            f"{cost.forward_cpu_s:.0f} | {cost.inversion_cpu_s:.0f} | **{cost.forward_equivalents:.0f}** | "
            f"{cost.weights_gib['transformer']:.1f} / {sum(cost.weights_gib.values()):.1f} | {cost.peak_gib:.1f} |",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m rnri_lab.bench.families", description=__doc__.splitlines()[0])
    add_run_arguments(p, "families.json and families.md")
    p.add_argument("--families", nargs="+", choices=[*REAL_SIZE, "flux-schnell"], help="default: all")
    p.add_argument("--repeats", type=int, default=2, help="timings of the single forward (median)")
    p.add_argument(
        "--strength", type=float, default=1.0, help="invert only this fraction of the chain (its last steps)"
    )
    args = p.parse_args(argv)
    dtype = run_dtype(args)
    families = tuple(args.families) if args.families else (*REAL_SIZE, "flux-schnell")
    with_flux = "flux-schnell" in families
    families = tuple(f for f in families if f != "flux-schnell")
    config = FamiliesConfig(args.size, args.device, dtype, args.repeats, families=families, strength=args.strength)
    costs = run(config)
    with tqdm(total=1, file=sys.stderr) as bar:
        flux_cost = measure_flux(config, bar) if with_flux else None
    args.out.mkdir(parents=True, exist_ok=True)
    from rnri_lab.bench import machine  # the CPU in words; imported late: rnri_lab.bench imports the whole bench

    meta = {"command": "python -m rnri_lab.bench.families " + " ".join(argv or sys.argv[1:]), "machine": machine()}
    record = {**meta, "config": asdict(config), "costs": [asdict(c) for c in costs]}
    record["flux"] = asdict(flux_cost) if flux_cost else None
    text = "\n\n".join(
        ([table(costs, args.device, args.size)] if costs else []) + ([flux_table(flux_cost)] if flux_cost else [])
    )
    (args.out / "families.json").write_text(json.dumps(record, indent=1))
    (args.out / "families.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
