"""``python -m rnri_lab.bench.batching``: what batched inversion buys, per batch size (issue 14).

On the LCM backbone (``rnri_lab.bench.families``: the real LCM_Dreamshaper_v7 UNet with seeded random weights, 64x64
latents; or with ``--size tiny`` the tiny architecture, 8x8 latents), per batch size B: one UNet call on B latents
(median of ``--repeats`` after a warm-up) and one default inversion of B latents through ``rnri.invert`` (B prompts,
B seeds, every UNet call on the whole batch), counted by hooks. Costs are per image in forward-equivalents: time over
one batch-1 forward's (CPU time on a CPU, where other processes do not inflate it; wall time on a GPU), so that 1.0
per item means batching saved nothing and less means it did; images per second are wall time. A CPU is busy at
batch 1 already, so batching there saves little; a large GPU is bound by kernel launches at batch 1 (docs/deploy.md),
so it should multiply throughput there. ``--invert-up-to`` skips whole inversions above a batch size (at real size
on a CPU each image costs a dozen forwards of ~10 s); ``--strength`` inverts only the chain's last steps.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
from dataclasses import asdict, dataclass

import torch

import rnri
from rnri.core.counting import count_unet_calls
from rnri.pipelines import adapter
from rnri_lab.bench.families import FamiliesConfig, build, time_forward
from rnri_lab.bench.measure import Usage, add_run_arguments, measure, run_dtype

PROMPTS = ("a photo of a cat sitting on a sofa", "a red barn in a field", "two dogs in the snow", "a bowl of fruit")


@dataclass(frozen=True)
class BatchingConfig:
    """Where and how batched inversion is measured."""

    size: str = "real"  # "real" LCM_Dreamshaper_v7 UNet (random weights) or the "tiny" architecture
    device: str = "cpu"
    dtype: str = "float32"  # "float16" on a GPU
    batches: tuple[int, ...] = (1, 2, 4, 8)
    invert_up_to: int = 8  # whole inversions only at batch sizes up to this; larger ones get the forward alone
    repeats: int = 2  # timings of each batch size's forward; the median is reported
    strength: float = 1.0  # the fraction of the chain inverted (its last steps); 1 is the default inversion
    seed: int = 0  # weights, latents and noise seeds


@dataclass
class BatchCost:
    """One batch size: a UNet call on the batch, and a whole inversion of it."""

    batch: int
    forward_s: float  # one UNet call on the batch: wall
    forward_cpu_s: float  # and CPU time
    forward_per_item: float  # forward-equivalents per item: the call's time / (batch x a batch-1 call's)
    calls: int | None = None  # UNet calls of the inversion (each on the whole batch); None: not inverted
    items: int | None = None  # latents through the UNet in all (calls x batch)
    inversion_s: float | None = None  # the whole batch's inversion: wall
    inversion_cpu_s: float | None = None
    per_image: float | None = None  # forward-equivalents per image: the inversion's time / batch / a batch-1 call's
    images_per_s: float | None = None  # batch / the inversion's wall time
    peak_mib: float | None = None  # peak memory the inversion added


def _basis(usage: Usage, device: str) -> float:
    return usage.wall_s if torch.device(device).type == "cuda" else usage.cpu_s


def measure_batch(pipe, batch: int, unit: float | None, config: BatchingConfig) -> BatchCost:
    """One batch size: its forward, and (up to ``invert_up_to``) a default inversion of ``batch`` latents; ``unit``
    is a batch-1 forward's time (None: this is batch 1, its own forward is the unit)."""
    side = 64 if config.size == "real" else 8
    g = torch.Generator().manual_seed(config.seed)
    z0 = torch.randn(batch, 4, side, side, generator=g).to(config.device)
    prompts = [PROMPTS[b % len(PROMPTS)] for b in range(batch)]
    eps = adapter.prompt_eps_fn(pipe, prompts, rnri.backbone_of(pipe).inversion_guidance_scale, (side, side))
    forward = time_forward(eps, z0, 999, FamiliesConfig(device=config.device, repeats=config.repeats))
    unit = unit or _basis(forward, config.device)
    cost = BatchCost(batch, forward.wall_s, forward.cpu_s, _basis(forward, config.device) / batch / unit)
    if batch > config.invert_up_to:
        return cost
    seeds = [config.seed + b for b in range(batch)]
    with count_unet_calls(pipe.unet) as calls, measure(config.device) as usage:
        rnri.invert(pipe, prompts, latents=z0, seed=seeds, strength=config.strength)
    cost.calls, cost.items = calls.forwards, calls.items
    cost.inversion_s, cost.inversion_cpu_s, cost.peak_mib = usage.wall_s, usage.cpu_s, usage.peak_mib
    cost.per_image = _basis(usage, config.device) / batch / unit
    cost.images_per_s = batch / usage.wall_s
    return cost


def run(config: BatchingConfig) -> list[BatchCost]:
    """Every configured batch size, smallest first: batch 1's forward is the unit of all (so batches include 1)."""
    pipe = build("lcm", FamiliesConfig(config.size, config.device, config.dtype, seed=config.seed))
    costs: list[BatchCost] = []
    for batch in sorted(config.batches):
        unit = _basis(Usage(costs[0].forward_s, costs[0].forward_cpu_s), config.device) if costs else None
        costs.append(measure_batch(pipe, batch, unit, config))
        print(f"batch {batch}: {asdict(costs[-1])}", file=sys.stderr, flush=True)
        gc.collect()
    return costs


def table(costs: list[BatchCost], config: BatchingConfig) -> str:
    """Markdown: per batch size, the forward and the inversion per image, in forward-equivalents and images/s."""
    basis = "wall" if torch.device(config.device).type == "cuda" else "CPU"
    latents = "64x64 latents (512x512 images)" if config.size == "real" else "8x8 latents"
    lines = [
        f"LCM backbone, {config.size} UNet, {latents}, {config.device} {config.dtype}; forward-equivalents: "
        f"{basis} time per image over one batch-1 forward's"
        + (f"; inversions of the last {config.strength:g} of the chain" if config.strength < 1 else "")
        + ".",
        "",
        f"| batch | forward s ({basis}) | forward per item (fwd-eq) | inversion: UNet calls (items) | "
        f"inversion s (wall / CPU) | per image (fwd-eq) | images/s (wall) | peak MiB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in costs:
        forward = c.forward_s if basis == "wall" else c.forward_cpu_s
        row = f"| {c.batch} | {forward:.3g} | {c.forward_per_item:.2f} | "
        if c.calls is None:
            row += "not run | | | | |"
        else:
            row += (
                f"{c.calls} ({c.items}) | {c.inversion_s:.3g} / {c.inversion_cpu_s:.3g} | **{c.per_image:.1f}** | "
                f"{c.images_per_s:.3g} | {c.peak_mib:.0f} |"
            )
        lines.append(row)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m rnri_lab.bench.batching", description=__doc__.splitlines()[0])
    add_run_arguments(p, "batching.json and batching.md")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8], help="batch sizes (1 is always measured)")
    p.add_argument("--invert-up-to", type=int, default=8, help="whole inversions only up to this batch size")
    p.add_argument("--repeats", type=int, default=2, help="timings of each forward (median)")
    p.add_argument("--strength", type=float, default=1.0, help="invert only this fraction of the chain")
    args = p.parse_args(argv)
    dtype = run_dtype(args)
    batches = tuple(sorted({1, *args.batches}))
    config = BatchingConfig(args.size, args.device, dtype, batches, args.invert_up_to, args.repeats, args.strength)
    costs = run(config)
    from rnri_lab.bench import machine  # the CPU in words; imported late: rnri_lab.bench imports the whole bench

    args.out.mkdir(parents=True, exist_ok=True)
    meta = {"command": "python -m rnri_lab.bench.batching " + " ".join(argv or sys.argv[1:]), "machine": machine()}
    record = {**meta, "torch": torch.__version__, "config": asdict(config), "costs": [asdict(c) for c in costs]}
    (args.out / "batching.json").write_text(json.dumps(record, indent=1))
    (args.out / "batching.md").write_text(table(costs, config) + "\n")
    print(table(costs, config))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
