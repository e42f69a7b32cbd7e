"""``python -m rnri_lab.bench.knobs``: what each knob of the fast GPU path (``rnri.pipelines.gpu.FastPath``) does to
one edit.

For every knob setting, on a fresh copy of one pipeline (knobs change a pipeline in place): seconds per edit
(invert + regenerate + decode, fastest of the repeats after a warm-up), the same in forward-equivalents (multiples of
one UNet forward), UNet forwards and backwards counted by hooks, reads of tensor values into Python (each one waits
for a GPU; counted by call site), and peak GPU memory. A knob becomes a default only once this shows it pays.
"""

from __future__ import annotations

import argparse
import copy
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from diffusers import LatentConsistencyModelPipeline
from PIL import Image

import rnri
from rnri.core.counting import count_unet_calls
from rnri.pipelines.gpu import FastPath, apply_fast_path, execution_device
from rnri_lab.bench.timing import timed

_SCALAR_READS = ("item", "__bool__", "__float__", "__int__", "tolist")  # each waits for the GPU on a CUDA tensor
REAL_SIZE = "real-size"  # --model: the real model's architectures with seeded random weights (no download)
DEFAULT_KNOBS: dict[str, FastPath] = {
    "baseline (sdpa)": FastPath(),
    "classic attention": FastPath(sdpa=False),
    "channels_last": FastPath(channels_last=True),
    "compile": FastPath(compile=True),
    "channels_last + compile": FastPath(channels_last=True, compile=True),
}


@dataclass
class KnobMeasurement:
    """Cost of one edit (invert + regenerate to an image) with one knob setting."""

    knob: str
    seconds: float  # wall time of the fastest of `repeats` edits after a warm-up edit (least disturbed by load)
    forward_equivalents: float  # seconds / seconds of one UNet forward of the baseline pipeline
    unet_forwards: int  # counted by hooks over one edit
    unet_backwards: int
    host_syncs: int  # tensor values read into Python over one edit (see count_host_syncs)
    peak_memory_mib: float | None  # peak CUDA memory allocated during one edit; None on the CPU
    warmup_seconds: float  # the first edit (compilation happens here)
    sync_sites: dict[str, int] = field(default_factory=dict, repr=False)


@contextmanager
def count_host_syncs(cuda_only: bool = False) -> Iterator[Counter]:
    """Count reads of tensor values into Python (``item``, ``bool``, ...) by call site ("file:line").

    On a GPU each read of a CUDA tensor waits for all queued work. On the CPU nothing waits; with
    ``cuda_only=False`` every read is counted, as a stand-in for what a GPU run would wait on.
    """
    sites: Counter = Counter()
    saved = {name: torch.Tensor.__dict__.get(name) for name in _SCALAR_READS}
    for name in _SCALAR_READS:
        setattr(torch.Tensor, name, _counting(getattr(torch.Tensor, name), sites, cuda_only))
    try:
        yield sites
    finally:
        for name, original in saved.items():
            if original is None:
                delattr(torch.Tensor, name)
            else:
                setattr(torch.Tensor, name, original)


def _counting(method: Callable, sites: Counter, cuda_only: bool) -> Callable:
    def counted(self, *args, **kwargs):
        if not cuda_only or self.is_cuda:
            caller = sys._getframe(1)
            sites[f"{Path(caller.f_code.co_filename).name}:{caller.f_lineno}"] += 1
        return method(self, *args, **kwargs)

    return counted


def measure_knobs(
    make_pipe: Callable[[], LatentConsistencyModelPipeline],
    image: Image.Image,
    source: str,
    target: str,
    knobs: dict[str, FastPath] | None = None,
    repeats: int = 3,
) -> list[KnobMeasurement]:
    """Measure one edit per knob setting, each on a fresh pipeline from ``make_pipe`` (knobs change it in place)."""
    knobs = DEFAULT_KNOBS if knobs is None else knobs
    unit = unet_forward_seconds(make_pipe(), image, 3 * repeats)
    return [
        measure_knob(name, make_pipe(), config, (image, source, target), repeats, unit)
        for name, config in knobs.items()
    ]


def measure_knob(
    name: str, pipe: LatentConsistencyModelPipeline, config: FastPath, edit: tuple, repeats: int, unit: float
) -> KnobMeasurement:
    """One knob setting's row: ``edit`` is (image, source prompt, target prompt)."""
    fast = apply_fast_path(pipe, replace(config), warm_up=False)
    device = execution_device(fast.pipe)
    timing = timed(lambda: _edit(fast.pipe, *edit), device, repeats)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with count_unet_calls(fast.pipe.unet) as calls, count_host_syncs(cuda_only=device.type == "cuda") as sites:
        _edit(fast.pipe, *edit)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return KnobMeasurement(
        name, timing.fastest, timing.fastest / unit, calls.forwards, calls.backwards, sum(sites.values()), peak,
        timing.first, dict(sites),
    )  # fmt: skip


def _edit(pipe: LatentConsistencyModelPipeline, image: Image.Image, source: str, target: str) -> Image.Image:
    return rnri.regenerate(pipe, rnri.invert(pipe, source, image=image), target)


def unet_forward_seconds(pipe: LatentConsistencyModelPipeline, image: Image.Image, repeats: int = 3) -> float:
    """One UNet forward at ``image``'s latent size, fastest of ``repeats``: the unit of forward-equivalents."""
    inv = rnri.invert(pipe, "unit", image=image, method="ddim")
    z, device = inv.latents, execution_device(pipe)
    text = torch.zeros(1, pipe.tokenizer.model_max_length, pipe.unet.config.cross_attention_dim, device=device)
    w_emb = torch.zeros(1, pipe.unet.config.time_cond_proj_dim, device=device)
    args = (z.to(pipe.unet.dtype), torch.tensor(500, device=device))
    kwargs = {"encoder_hidden_states": text.to(pipe.unet.dtype), "timestep_cond": w_emb.to(pipe.unet.dtype)}
    with torch.no_grad():
        return timed(lambda: pipe.unet(*args, **kwargs), device, repeats).fastest


def gpu_only_knobs(device: torch.device) -> dict[str, FastPath]:
    """Knobs that only mean something on a CUDA GPU (measured there, listed as not measured elsewhere)."""
    return {"cpu_offload": FastPath(cpu_offload="on")} if device.type == "cuda" else {}


def knob_table(rows: list[KnobMeasurement]) -> str:
    """A markdown table of measurements, the first row the reference for the speed-up column."""
    lines = [
        "| knob | s / edit | forward-equivalents | speed-up | UNet fwd + bwd | host syncs | peak MiB | first edit s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        peak = "-" if row.peak_memory_mib is None else f"{row.peak_memory_mib:.0f}"
        lines.append(
            f"| {row.knob} | {row.seconds:.3f} | {row.forward_equivalents:.1f} | {rows[0].seconds / row.seconds:.2f}x "
            f"| {row.unet_forwards} + {row.unet_backwards} | {row.host_syncs} | {peak} | {row.warmup_seconds:.2f} |"
        )
    return "\n".join(lines)


def pipeline(model: str, device: str | None) -> LatentConsistencyModelPipeline:
    """``model`` loaded as the editor loads it, or with ``REAL_SIZE`` the real architectures with random weights
    (``rnri_lab.bench.edit_latency.real_size_pipeline``, itself ``rnri.pipelines.loading.random_pipeline``)."""
    if model != REAL_SIZE:
        return rnri.load_pipeline(model, device=device)
    from rnri.pipelines.loading import default_device, frozen_on
    from rnri_lab.bench.edit_latency import real_size_pipeline

    where = torch.device(device) if device else default_device()
    return frozen_on(real_size_pipeline(), where, torch.float16 if where.type == "cuda" else torch.float32)


def main(argv: list[str] | None = None) -> int:
    """Measure the fast-path knobs on one model and print the table."""
    parser = argparse.ArgumentParser(prog="python -m rnri_lab.bench.knobs", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny", help=f"Hub id, local folder, 'tiny' or '{REAL_SIZE}' (tiny)")
    parser.add_argument("--device", help="cuda or cpu (default: the best available)")
    parser.add_argument("--size", type=int, default=None, help="image side in pixels (default: the model's)")
    parser.add_argument("--repeats", type=int, default=5, help="timed edits per knob (default: 5)")
    parser.add_argument("--no-compile", action="store_true", help="leave out the torch.compile rows")
    args = parser.parse_args(argv)
    base = pipeline(args.model, args.device)
    device = execution_device(base)
    knobs = {k: v for k, v in DEFAULT_KNOBS.items() if not (args.no_compile and v.compile)}
    knobs.update(gpu_only_knobs(device))
    side = args.size or base.unet.config.sample_size * base.vae_scale_factor
    image = Image.effect_noise((side, side), 64).convert("RGB")
    rows = measure_knobs(lambda: copy.deepcopy(base), image, "a photo", "a painting", knobs, args.repeats)
    print(f"{args.model} on {device}, {side}x{side}, {torch.get_num_threads()} CPU threads, torch {torch.__version__}")
    print(knob_table(rows))
    print("host syncs of the baseline by call site:", dict(rows[0].sync_sites))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
