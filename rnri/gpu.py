"""The fast GPU path: speed knobs applied to a stock pipeline, a tiny preview decoder, and their measurement.

Every knob is a field of :class:`FastPath`; :func:`apply_fast_path` applies them in place and says what it did.
On the CPU each knob is a safe no-op unless it says otherwise. fp16 is not a knob here: ``rnri.load_pipeline``
already loads fp16 on CUDA. Prompt embeddings are cached by ``rnri.adapter.encode_prompt``.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from diffusers import AutoencoderTiny, LatentConsistencyModelPipeline
from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0
from PIL import Image

import rnri
from rnri.counting import count_unet_calls
from rnri.loading import ModelLoadError

OFFLOAD_CHOICES = ("auto", "on", "off")
TINY_PREVIEW = "tiny"  # a seeded random TAESD-shaped decoder: same code path, no download (its images are noise)
GIB = 1024**3


class FastPathError(RuntimeError):
    """A speed knob could not be applied here (e.g. torch.compile without a compiler); the message says why."""


@dataclass(frozen=True)
class FastPath:
    """Speed knobs for a pipeline; each is measured by :func:`measure_knobs` before it becomes a default."""

    channels_last: bool = False  # UNet and VAE weights in NHWC memory format (faster convolutions on tensor cores)
    sdpa: bool = True  # PyTorch scaled-dot-product attention (diffusers' default); False: the classic processor
    compile: bool = False  # torch.compile the UNet's forward, then warm up; needs a C compiler; not on ZeroGPU
    compile_mode: str | None = None  # torch.compile mode, e.g. "max-autotune-no-cudagraphs"; None: its default
    compile_backend: str = "inductor"  # "eager" traces the graph but generates no code (tests, debugging)
    cpu_offload: str = "auto"  # "on": model CPU offload; "off"; "auto": on when the GPU is below offload_below_gib
    offload_below_gib: float = 6.0  # fp16 weights are 2.1 GB and a Newton step's activations come on top
    preview_vae: str | None = None  # TAESD for fast previews: a Hub id ("madebyollin/taesd"), a folder, or "tiny"

    def __post_init__(self) -> None:
        if self.cpu_offload not in OFFLOAD_CHOICES:
            raise ValueError(f"cpu_offload must be one of {OFFLOAD_CHOICES}, got {self.cpu_offload!r}")


@dataclass
class FastPipeline:
    """What :func:`apply_fast_path` did to a pipeline, and the preview decoder it loaded (None without one)."""

    pipe: LatentConsistencyModelPipeline
    applied: list[str]  # knobs that took effect, e.g. ["channels_last", "compile"]
    skipped: list[str]  # knobs that were asked for but do not apply here, each with the reason
    preview_vae: AutoencoderTiny | None = None
    warmup_seconds: float | None = None  # time of the warm-up run (compilation), when there was one


def execution_device(pipe: LatentConsistencyModelPipeline) -> torch.device:
    """The device the pipeline computes on (with CPU offload: the GPU, not where the weights rest)."""
    return pipe._execution_device


def wants_offload(config: FastPath, device: torch.device) -> bool:
    """Whether model CPU offload should be on for ``device`` (never on a CPU; "auto" asks the GPU's size)."""
    if device.type != "cuda" or config.cpu_offload == "off":
        return False
    if config.cpu_offload == "on":
        return True
    try:
        total = torch.cuda.get_device_properties(device).total_memory
    except (RuntimeError, AssertionError, AttributeError):  # emulated or restricted CUDA (e.g. ZeroGPU at start)
        return False
    return total < config.offload_below_gib * GIB


def apply_fast_path(pipe: LatentConsistencyModelPipeline, config: FastPath, *, warm_up: bool = True) -> FastPipeline:
    """Apply ``config`` to ``pipe`` in place (it changes the resident pipeline for every caller)."""
    device = execution_device(pipe)
    applied, skipped = [], []
    processor = AttnProcessor2_0() if config.sdpa else AttnProcessor()
    pipe.unet.set_attn_processor(processor)
    pipe.vae.set_attn_processor(processor)
    applied.append("sdpa" if config.sdpa else "classic attention")
    if config.channels_last:
        pipe.unet.to(memory_format=torch.channels_last)
        pipe.vae.to(memory_format=torch.channels_last)
        applied.append("channels_last")
    if wants_offload(config, device):
        pipe.enable_model_cpu_offload(device=device)
        applied.append("cpu_offload")
    elif config.cpu_offload == "on":
        skipped.append(f"cpu_offload (needs a CUDA GPU; the pipeline is on {device.type})")
    if config.compile:
        compile_unet(pipe, config)
        applied.append("compile")
    preview = load_preview_vae(config.preview_vae, device, pipe.unet.dtype) if config.preview_vae else None
    if preview is not None:
        applied.append("preview_vae")
    seconds = warm_up_pipeline(pipe) if config.compile and warm_up else None
    return FastPipeline(pipe, applied, skipped, preview, seconds)


def compile_unet(pipe: LatentConsistencyModelPipeline, config: FastPath) -> None:
    """``torch.compile`` the UNet's forward; hooks (UNet counting, CPU offload) stay outside the compiled graph."""
    unet = pipe.unet
    if getattr(unet.forward, "_rnri_compiled", False):
        return
    try:
        compiled = torch.compile(unet.forward, mode=config.compile_mode, backend=config.compile_backend)
    except Exception as error:  # an unknown backend or mode, or a torch built without the compiler
        raise _compile_error("setting up torch.compile", error) from error
    compiled._rnri_compiled = True
    unet.forward = compiled


def warm_up_pipeline(pipe: LatentConsistencyModelPipeline, resolution: int | None = None) -> float:
    """One inversion and one regeneration at ``resolution`` (default: native) so compilation happens now."""
    side = resolution or pipe.unet.config.sample_size * pipe.vae_scale_factor
    image = Image.new("RGB", (side, side), (128, 128, 128))
    start = time.perf_counter()
    try:
        inv = rnri.invert(pipe, "warm-up", image=image)
        rnri.regenerate(pipe, inv, "warm-up", output_type="latent")
    except Exception as error:  # compiler and toolchain errors come in many types
        raise _compile_error("the torch.compile warm-up", error) from error
    return time.perf_counter() - start


def _compile_error(what: str, error: Exception) -> FastPathError:
    return FastPathError(
        f"{what} failed ({type(error).__name__}: {error}); compiling needs a C compiler (gcc) and, on CUDA, "
        "Triton. Run without compile."
    )


def tiny_preview_vae(seed: int = 0) -> AutoencoderTiny:
    """A TAESD-shaped decoder with seeded random weights and tiny channels (tests; its images are noise)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return AutoencoderTiny(encoder_block_out_channels=(8, 8, 8, 8), decoder_block_out_channels=(8, 8, 8, 8))


def load_preview_vae(source: str, device: torch.device | str, dtype: torch.dtype) -> AutoencoderTiny:
    """TAESD from a Hub id or local folder (safetensors only), or ``"tiny"``; ``ModelLoadError`` if it can't be had."""
    if source == TINY_PREVIEW:
        vae = tiny_preview_vae()
    else:
        try:
            vae = AutoencoderTiny.from_pretrained(source, dtype=dtype, use_safetensors=True)
        except Exception as error:  # hub, network, file and format errors all end here
            where = "local folder" if Path(source).exists() else "Hugging Face Hub id"
            raise ModelLoadError(
                f"could not load the preview decoder {source!r} ({where}): {type(error).__name__}: {error}\n"
                "Ways out: run once with internet access so madebyollin/taesd is cached (10 MB); pass a local "
                "folder holding AutoencoderTiny safetensors weights; or turn the preview decoder off."
            ) from error
    vae = vae.requires_grad_(False).to(device=device)
    return vae if vae.dtype == dtype else vae.to(dtype=dtype)


@torch.no_grad()
def preview_image(preview_vae: AutoencoderTiny, latents: torch.Tensor, size: tuple[int, int] | None = None):
    """A fast RGB preview of clean latents (1, 4, h, w) (scaled as the UNet sees them), resized to ``size``."""
    param = next(preview_vae.parameters())
    pixels = preview_vae.decode(latents.to(param.device, param.dtype), return_dict=False)[0]  # in [-1, 1]
    array = (pixels[0].float().clamp(-1, 1) * 127.5 + 127.5).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    image = Image.fromarray(array, "RGB") if array.shape[-1] == 3 else Image.fromarray(array[..., 0])
    return image if size is None or image.size == size else image.resize(size, Image.Resampling.BILINEAR)


# --- measurement ---------------------------------------------------------------------------------------------

_SCALAR_READS = ("item", "__bool__", "__float__", "__int__", "tolist")  # each waits for the GPU on a CUDA tensor


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


DEFAULT_KNOBS: dict[str, FastPath] = {
    "baseline (sdpa)": FastPath(),
    "classic attention": FastPath(sdpa=False),
    "channels_last": FastPath(channels_last=True),
    "compile": FastPath(compile=True),
    "channels_last + compile": FastPath(channels_last=True, compile=True),
}


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
        _measure_one(name, make_pipe(), config, image, source, target, repeats, unit) for name, config in knobs.items()
    ]


def _measure_one(name, pipe, config, image, source, target, repeats, unit) -> KnobMeasurement:
    fast = apply_fast_path(pipe, replace(config), warm_up=False)
    start = time.perf_counter()
    _edit(fast.pipe, image, source, target)
    warmup = time.perf_counter() - start
    device = execution_device(fast.pipe)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        _edit(fast.pipe, image, source, target)
        _synchronize(device)
        times.append(time.perf_counter() - start)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with count_unet_calls(fast.pipe.unet) as calls, count_host_syncs(cuda_only=device.type == "cuda") as sites:
        _edit(fast.pipe, image, source, target)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    seconds = min(times)
    return KnobMeasurement(
        name, seconds, seconds / unit, calls.forwards, calls.backwards, sum(sites.values()), peak, warmup, dict(sites)
    )


def _edit(pipe, image: Image.Image, source: str, target: str) -> Image.Image:
    return rnri.regenerate(pipe, rnri.invert(pipe, source, image=image), target)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def unet_forward_seconds(pipe: LatentConsistencyModelPipeline, image: Image.Image, repeats: int = 3) -> float:
    """One UNet forward at ``image``'s latent size, fastest of ``repeats``: the unit of forward-equivalents."""
    inv = rnri.invert(pipe, "unit", image=image, method="ddim")
    z, device = inv.latents, execution_device(pipe)
    text = torch.zeros(1, pipe.tokenizer.model_max_length, pipe.unet.config.cross_attention_dim, device=device)
    w_emb = torch.zeros(1, pipe.unet.config.time_cond_proj_dim, device=device)
    args = (z.to(pipe.unet.dtype), torch.tensor(500, device=device))
    kwargs = {"encoder_hidden_states": text.to(pipe.unet.dtype), "timestep_cond": w_emb.to(pipe.unet.dtype)}
    times = []
    with torch.no_grad():
        for _ in range(repeats + 1):
            start = time.perf_counter()
            pipe.unet(*args, **kwargs)
            _synchronize(device)
            times.append(time.perf_counter() - start)
    return min(times[1:])


# --- python -m rnri.gpu: the knob table ----------------------------------------------------------------------


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


def main(argv: list[str] | None = None) -> int:
    """Measure the fast-path knobs on one model and print the table (``python -m rnri.gpu --help``)."""
    import argparse
    import copy

    parser = argparse.ArgumentParser(prog="python -m rnri.gpu", description=main.__doc__)
    parser.add_argument("--model", default="tiny", help="Hub id, local folder or 'tiny' (default: tiny)")
    parser.add_argument("--device", help="cuda or cpu (default: the best available)")
    parser.add_argument("--size", type=int, default=None, help="image side in pixels (default: the model's)")
    parser.add_argument("--repeats", type=int, default=5, help="timed edits per knob (default: 5)")
    parser.add_argument("--no-compile", action="store_true", help="leave out the torch.compile rows")
    args = parser.parse_args(argv)
    base = rnri.load_pipeline(args.model, device=args.device)
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
