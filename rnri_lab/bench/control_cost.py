"""``python -m rnri_lab.bench.control_cost``: what attention control and directions cost per edit.

On a pipeline of the real model's size (``rnri_lab.bench.edit_latency``; random weights: cost does not depend on them)
or the tiny one, from one cached inversion, each way of editing to latents: UNet calls and forward-equivalents
(calls weighted by their batch, counted by hooks), median wall seconds after a warm-up, and the peak memory above
what was resident (CPU: resident set; CUDA: allocator).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

import rnri
from rnri.core.counting import count_unet_calls
from rnri.core.directions import Direction, Directions
from rnri.pipelines.attention import AttentionControl
from rnri.pipelines.loading import frozen_on, tiny_pipeline
from rnri_lab.bench.edit_latency import SOURCE, TARGET, real_size_pipeline
from rnri_lab.bench.timing import measured

WAYS: dict[str, dict[str, Any]] = {  # regenerate's keyword arguments per way of editing
    "plain regeneration": {},
    "attention control (local blend)": {"control": AttentionControl()},
    "attention control, no local blend": {"control": AttentionControl(local_blend=False)},
    "2 directions + reference": {"directions": Directions((Direction("tiger"), Direction("cat", -1.0)))},
    "attention control + 2 directions + reference": {
        "control": AttentionControl(),
        "directions": Directions((Direction("tiger"), Direction("cat", -1.0))),
    },
}


def timed(work, device: str, repeats: int) -> dict[str, float]:
    """Median wall and CPU seconds of ``repeats`` runs after one warm-up (CPU seconds stay honest on a machine that
    others share), and the largest peak memory growth (MiB)."""
    usage = measured(work, device, repeats)
    return {"seconds": usage.wall_s, "cpu_seconds": usage.cpu_s, "peak_mib": usage.peak_mib}


def run(size: str, device: str, repeats: int) -> dict[str, Any]:
    """Every way of :data:`WAYS` on one inversion; a JSON-ready dict."""
    dtype = torch.float16 if device.startswith("cuda") else torch.float32
    pipe = frozen_on(real_size_pipeline() if size == "real" else tiny_pipeline(), device, dtype)
    side = pipe.unet.config.sample_size * pipe.vae_scale_factor
    photo = Image.fromarray((np.random.default_rng(0).random((side, side, 3)) * 255).astype(np.uint8))
    inv = rnri.invert(pipe, SOURCE, image=photo)
    rows = {}
    for name, options in WAYS.items():

        def edit(options=options) -> torch.Tensor:
            return rnri.regenerate(pipe, inv, TARGET, output_type="latent", **options)

        with count_unet_calls(pipe.unet) as calls:
            edit()
        rows[name] = {"calls": calls.forwards, "forward_equivalents": calls.items, **timed(edit, device, repeats)}
    name = torch.cuda.get_device_name(device) if device.startswith("cuda") else "CPU"
    return {"device": f"{name} ({str(dtype).removeprefix('torch.')})", "size": f"{side}x{side}", "rows": rows}


def table(result: dict[str, Any]) -> str:
    plain = result["rows"]["plain regeneration"]
    lines = [f"{result['device']}, {result['size']}, 4 steps, to latents; median of the repeats after a warm-up.", ""]
    lines += [
        "| way | UNet calls | forward-equivalents | wall s | CPU s | CPU s / plain | peak MiB |",
        "|---|---|---|---|---|---|---|",
    ]
    for way, r in result["rows"].items():
        lines.append(
            f"| {way} | {r['calls']} | {r['forward_equivalents']} | {r['seconds']:.3f} | {r['cpu_seconds']:.2f} | "
            f"{r['cpu_seconds'] / plain['cpu_seconds']:.2f} | {r['peak_mib']:.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rnri_lab.bench.control_cost", description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=("real", "tiny"), default="real")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("bench-out/control_cost.json"))
    args = parser.parse_args(argv)
    result = run(args.size, args.device, args.repeats)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
