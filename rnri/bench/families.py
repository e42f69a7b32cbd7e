"""``python -m rnri.bench.families``: what the default inversion of each backbone costs at real size.

Per backbone, a pipeline with the real UNet architecture and seeded random weights (cost does not depend on the
values): LCM_Dreamshaper_v7's (SD 1.5 with the LCM guidance embedding), Stable Diffusion 1.5's with DDIM,
SD-Turbo's (SD 2.1) with Euler and SDXL-Turbo's (SDXL) with Euler ancestral, each at 512x512 (64x64 latents) and
batch 1. It times one UNet forward (median of ``--repeats`` after a warm-up) and one inversion through
``rnri.invert`` at the backbone's defaults, counting UNet passes with hooks; forward-equivalents divide the
inversion's time by the forward's (CPU time on a CPU, wall time on a GPU). The text encoders have the real widths
but one layer, and the VAE is tiny: neither runs in an inversion from latents. ``--size tiny`` runs the same on the
tiny architectures (what the tests do); ``--strength`` inverts only the last steps of each chain, the same work per
step as the default inversion's, for the 50-step Stable Diffusion chain on a slow CPU.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
from dataclasses import asdict, dataclass
from typing import Any

import torch
from diffusers import LatentConsistencyModelPipeline, StableDiffusionPipeline, StableDiffusionXLPipeline
from tqdm import tqdm

import rnri
from rnri import adapter
from rnri.bench.measure import Usage, add_run_arguments, measure, run_dtype
from rnri.bench.realsize import LCM_DREAMSHAPER_V7_UNET
from rnri.counting import count_unet_calls
from rnri.loading import (
    RANDOM_MODELS,
    TINY_VAE,
    Architecture,
    build_random,
    ddim_scheduler,
    euler_ancestral_scheduler,
    euler_scheduler,
    frozen_on,
    lcm_scheduler,
    random_tiny_pipeline,
)

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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m rnri.bench.families", description=__doc__.splitlines()[0])
    add_run_arguments(p, "families.json and families.md")
    p.add_argument("--families", nargs="+", choices=list(REAL_SIZE), help="default: all")
    p.add_argument("--repeats", type=int, default=2, help="timings of the single forward (median)")
    p.add_argument(
        "--strength", type=float, default=1.0, help="invert only this fraction of the chain (its last steps)"
    )
    args = p.parse_args(argv)
    dtype = run_dtype(args)
    families = tuple(args.families) if args.families else tuple(REAL_SIZE)
    config = FamiliesConfig(args.size, args.device, dtype, args.repeats, families=families, strength=args.strength)
    costs = run(config)
    args.out.mkdir(parents=True, exist_ok=True)
    from rnri.bench import machine  # the CPU in words; imported late: rnri.bench imports the whole bench

    meta = {"command": "python -m rnri.bench.families " + " ".join(argv or sys.argv[1:]), "machine": machine()}
    record = {**meta, "config": asdict(config), "costs": [asdict(c) for c in costs]}
    (args.out / "families.json").write_text(json.dumps(record, indent=1))
    (args.out / "families.md").write_text(table(costs, args.device, args.size) + "\n")
    print(table(costs, args.device, args.size))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
