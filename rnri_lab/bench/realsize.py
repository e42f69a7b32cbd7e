"""Cost at real size: a UNet with the exact architecture of ``SimianLuo/LCM_Dreamshaper_v7``, random weights.

Measures, at 64x64 latents (512x512 images) and batch 1, one forward, one forward+backward (a vector-Jacobian
product in the latent, as RNRI takes it) and its variants, and a whole 4-step inversion per method, each in
forward-equivalents: wall time divided by the median forward time of the same run. Weights are random; cost does
not depend on their values.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from diffusers import LCMScheduler, UNet2DConditionModel

from rnri.core.chain import EpsFn
from rnri.core.counting import count_unet_calls
from rnri.core.inversion import InversionError, invert_chain
from rnri.core.solvers import make_config
from rnri_lab.bench import peer
from rnri_lab.bench.grid import PEER, MethodSpec, method_grid
from rnri_lab.bench.measure import Usage, measure
from rnri_lab.bench.models import chain_steps
from rnri_lab.bench.timing import measured

# The UNet of SimianLuo/LCM_Dreamshaper_v7: Stable Diffusion 1.5's UNet (unet/config.json) with the LCM guidance
# embedding (time_cond_proj_dim=256); 860M parameters.
LCM_DREAMSHAPER_V7_UNET: dict[str, Any] = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "layers_per_block": 2,
    "block_out_channels": (320, 640, 1280, 1280),
    "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    "cross_attention_dim": 768,
    "attention_head_dim": 8,
    "norm_num_groups": 32,
    "act_fn": "silu",
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "time_cond_proj_dim": 256,
}
TIMED_METHODS = (  # labels of method_grid((1, 2)) measured as whole inversions
    "ddim",
    "fixed-point x2",
    "fixed-point x2 + Anderson",
    "rnri-jf x2 (official code)",
    "**rnri (old default)**",
    "rnri x2",
    "rnri, autograd slope",
    "diffusers DDIMInverseScheduler",
)


@dataclass(frozen=True)
class RealSizeConfig:
    """Where and how the real-size cost is measured."""

    device: str = "cpu"
    dtype: str = "float32"  # "float16" on a GPU
    repeats: int = 2  # timings per single pass; the median is reported
    seed: int = 0  # weights, latents and noises
    num_inference_steps: int = 4
    methods: tuple[str, ...] = TIMED_METHODS


@dataclass
class Cost:
    """One measured piece of work."""

    name: str
    seconds: float  # median wall time
    cpu_seconds: float  # median CPU time of the process (all threads); the basis of forward_equivalents on a CPU
    forward_equivalents: float  # time / median forward time of the same run (CPU time on a CPU, wall on a GPU)
    peak_mib: float  # peak memory it added (CPU: resident-set growth; CUDA: allocator)
    forwards: int = 0  # UNet passes counted by hooks (whole inversions)
    backwards: int = 0
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def build_unet(config: RealSizeConfig) -> UNet2DConditionModel:
    """The LCM_Dreamshaper_v7 UNet with seeded random weights, frozen, on the configured device and dtype."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        unet = UNet2DConditionModel(**LCM_DREAMSHAPER_V7_UNET)
    unet.requires_grad_(False).eval()
    return unet.to(device=config.device, dtype=getattr(torch, config.dtype))


def unet_eps(unet: UNet2DConditionModel, seed: int) -> EpsFn:
    """eps(z, t) with a random prompt embedding (1, 77, 768) and guidance embedding fixed; float32 in and out."""
    g = torch.Generator().manual_seed(seed)
    prompt = torch.randn(1, 77, 768, generator=g).to(unet.device, unet.dtype)
    w_emb = torch.randn(1, 256, generator=g).to(unet.device, unet.dtype)

    def eps_fn(z: torch.Tensor, t: int) -> torch.Tensor:
        timestep = torch.tensor(t, device=z.device)
        out = unet(z.to(unet.dtype), timestep, encoder_hidden_states=prompt, timestep_cond=w_emb, return_dict=False)
        return out[0].float()

    return eps_fn


def _timed(work: Callable[[], Any], device: str, repeats: int) -> tuple[Usage, str]:
    """Median wall and CPU seconds and largest peak MiB of ``repeats`` runs of ``work``; NaN and why where it fails."""
    try:
        return measured(work, device, repeats, warmups=0), ""
    except (RuntimeError, NotImplementedError) as error:
        return Usage(), f"{type(error).__name__}: {str(error).splitlines()[0][:160]}"


def _basis(usage: Usage, device: str) -> float:
    """The time that forward-equivalents divide: CPU time on a CPU (other processes do not inflate it), else wall."""
    return usage.wall_s if torch.device(device).type == "cuda" else usage.cpu_s


def pass_variants(unet: UNet2DConditionModel, eps_fn: EpsFn, z: torch.Tensor) -> dict[str, Callable[[], Any]]:
    """The single passes to time: forward, and the ways to get a vector-Jacobian (or Jacobian-vector) product."""
    v = torch.randn_like(z)

    def vjp() -> torch.Tensor:  # what RNRI's Newton step takes: d<v, eps(z)>/dz by reverse-mode autograd
        zz = z.detach().requires_grad_(True)
        return torch.autograd.grad((eps_fn(zz, 999) * v).sum(), zz)[0]

    def with_weight_grads() -> torch.Tensor:  # the same, had the UNet's weights been left trainable
        unet.requires_grad_(True)
        try:
            return vjp()
        finally:
            unet.requires_grad_(False)

    def checkpointed() -> torch.Tensor:  # activation checkpointing: recompute blocks in backward, store less
        unet.enable_gradient_checkpointing()
        try:
            return vjp()
        finally:
            unet.disable_gradient_checkpointing()

    return {
        "forward": lambda: torch.no_grad()(eps_fn)(z, 999),
        "forward+backward (autograd VJP, weights frozen)": vjp,
        "forward+backward, weights trainable": with_weight_grads,
        "forward+backward, activation checkpointing": checkpointed,
        "forward+backward, torch.func.vjp": lambda: torch.func.vjp(lambda x: eps_fn(x, 999), z)[1](v),
        "forward-mode JVP, torch.func.jvp": lambda: torch.func.jvp(lambda x: eps_fn(x, 999), (z,), (v,)),
    }


def measure_passes(unet: UNet2DConditionModel, eps_fn: EpsFn, z: torch.Tensor, config: RealSizeConfig) -> list[Cost]:
    """Time every single-pass variant; forward first (after one warm-up), so the others are in its units."""
    variants = pass_variants(unet, eps_fn, z)
    variants["forward"](), variants["forward+backward (autograd VJP, weights frozen)"]()  # warm-up, untimed
    costs, t_forward = [], math.nan
    for name, work in variants.items():
        usage, note = _timed(work, config.device, config.repeats if name == "forward" else 1)
        t_forward = _basis(usage, config.device) if name == "forward" else t_forward
        basis = _basis(usage, config.device)
        costs.append(Cost(name, usage.wall_s, usage.cpu_s, basis / t_forward, usage.peak_mib, note=note))
    return costs


def _inversion(spec: MethodSpec, eps_fn: EpsFn, z0: torch.Tensor, noises: list, config: RealSizeConfig) -> None:
    """One whole inversion of ``z0`` by ``spec`` (the peer on its own chain)."""
    if spec.method == PEER:
        peer.invert(eps_fn, LCMScheduler().config, z0, config.num_inference_steps)
        return
    steps = chain_steps("lcm", LCMScheduler().config, config.num_inference_steps)
    invert_chain(eps_fn, steps, z0, noises, spec.method, make_config(spec.method, spec.options))


def measure_inversions(unet, eps_fn: EpsFn, t_forward: float, config: RealSizeConfig) -> list[Cost]:
    """One whole 4-step inversion per method on the stochastic LCM chain, in forward-equivalents."""
    g = torch.Generator().manual_seed(config.seed)
    z0 = torch.randn(1, 4, 64, 64, generator=g).to(config.device)
    noises = [torch.randn(z0.shape, generator=g).to(config.device) for _ in range(config.num_inference_steps - 1)]
    noises.append(None)
    specs = {s.label: s for s in method_grid((1, 2))}
    costs = []
    for label in config.methods:
        with count_unet_calls(unet) as calls, measure(config.device) as usage:
            note = ""
            try:
                _inversion(specs[label], eps_fn, z0, noises, config)
            except InversionError as error:
                note = f"InversionError: {error}"
        costs.append(
            Cost(
                label,
                usage.wall_s,
                usage.cpu_s,
                _basis(usage, config.device) / t_forward,
                usage.peak_mib,
                forwards=calls.forwards,
                backwards=calls.backwards,
                note=note,
            )
        )
    return costs


def machine_device(config: RealSizeConfig) -> str:
    """The device measured, in words."""
    if torch.device(config.device).type == "cuda":
        return f"{torch.cuda.get_device_name(config.device)} ({config.dtype})"
    return f"CPU, {torch.get_num_threads()} threads ({config.dtype})"


def run_real_size(config: RealSizeConfig, progress: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Build the real-size UNet, time its passes and a whole inversion per method; a JSON-ready dict."""
    with measure(config.device) as build:
        unet = build_unet(config)
    progress(f"built the LCM_Dreamshaper_v7-size UNet in {build.wall_s:.0f} s")
    eps_fn = unet_eps(unet, config.seed)
    z = torch.randn(1, 4, 64, 64, generator=torch.Generator().manual_seed(config.seed + 1)).to(config.device)
    passes = measure_passes(unet, eps_fn, z, config)
    progress("single passes: " + "; ".join(f"{c.name} {c.seconds:.1f} s" for c in passes))
    t_forward = passes[0].seconds if torch.device(config.device).type == "cuda" else passes[0].cpu_seconds
    inversions = measure_inversions(unet, eps_fn, t_forward, config)
    progress("inversions: " + "; ".join(f"{c.name} {c.forward_equivalents:.1f} fwd-eq" for c in inversions))
    return {
        "device": machine_device(config),
        "config": asdict(config),
        "parameters_millions": sum(p.numel() for p in unet.parameters()) / 1e6,
        "weights_mib": build.peak_mib,
        "passes": [c.as_dict() for c in passes],
        "inversions": [c.as_dict() for c in inversions],
    }


def real_size_table(result: dict[str, Any]) -> str:
    """Markdown: the single passes, then the whole inversions, in seconds, forward-equivalents and MiB."""
    lines = [
        f"Device: {result['device']}; UNet {result['parameters_millions']:.0f}M parameters; 64x64 latents, batch 1.",
        "",
        "| work | fwd+bwd counted | wall s | CPU s | forward-equivalents | peak MiB | note |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in result["passes"] + result["inversions"]:
        counted = f"{c['forwards']}+{c['backwards']}" if c["forwards"] else ""
        lines.append(
            f"| {c['name']} | {counted} | {c['seconds']:.1f} | {c['cpu_seconds']:.1f} | "
            f"{c['forward_equivalents']:.1f} | {c['peak_mib']:.0f} | {c['note']} |"
        )
    return "\n".join(lines)
