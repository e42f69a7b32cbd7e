"""The ``rnri`` command line (also ``python -m rnri``): a thin front end over the public API.

rnri edit photo.jpg --source "a cat on a sofa" --target "a tiger on a sofa" -o tiger.png
rnri invert photo.jpg --source "a cat on a sofa" -o cat.safetensors
rnri regenerate cat.safetensors --prompt "a fox on a sofa" -o fox.png
rnri batch photos/ --targets prompts.txt -o augmented/
rnri bench ... | rnri eval ...   (handed to rnri.bench.main / rnri.evaluation.main)
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import importlib
import json
import math
import os
import re
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image, UnidentifiedImageError

import rnri
from rnri import gpu
from rnri.api import DEFAULT_GUIDANCE
from rnri.serialize import load_inversion, save_inversion, saved_model

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")  # what batch reads
OUTPUT_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}  # what edits are written as
INVERSION_SUFFIX = ".safetensors"
DISPATCH = {"bench": "rnri.bench", "eval": "rnri.evaluation"}  # subcommands owned by other modules
MODEL_ENV = "RNRI_MODEL"


class CliError(Exception):
    """A user error: printed as one line, exit code 1."""


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 ok, 1 error, 2 bad usage)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in DISPATCH:
        return dispatch(argv[0], argv[1:])
    args = build_parser().parse_args(argv)
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        try:
            return args.run(args)
        except (CliError, ValueError, OSError, rnri.ModelLoadError, rnri.InversionError, gpu.FastPathError) as error:
            print(f"rnri: error: {error}", file=sys.stderr)
            return 1
        except torch.OutOfMemoryError as error:
            print(
                f"rnri: error: out of GPU memory ({error}); try --offload on or a smaller --resolution",
                file=sys.stderr,
            )
            return 1
        except KeyboardInterrupt:
            print("rnri: interrupted", file=sys.stderr)
            return 130


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"rnri: warning: {message}", file=sys.stderr)


# --- the parser ------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of every subcommand (README's documented flags are checked against it)."""
    parser = argparse.ArgumentParser(
        prog="rnri",
        description="Edit photos by describing them: invert a photo on a Latent Consistency Model with Regularized "
        "Newton-Raphson Inversion, then regenerate it under a new prompt.",
        epilog="Run 'rnri COMMAND --help' for a command's options. The model comes from --model, else $RNRI_MODEL, "
        f"else {rnri.DEFAULT_MODEL}; 'tiny' is a built-in test model (no download, noise images).",
    )
    parser.add_argument("--version", action="version", version=f"rnri {rnri.__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    _add_edit(commands)
    _add_invert(commands)
    _add_regenerate(commands)
    _add_batch(commands)
    for name, module in DISPATCH.items():
        sub = commands.add_parser(name, help=f"run {module} (all arguments are passed on)", add_help=False)
        sub.add_argument("rest", nargs=argparse.REMAINDER)
        sub.set_defaults(run=lambda args, name=name: dispatch(name, args.rest))
    return parser


def _add_edit(commands) -> None:
    p = commands.add_parser("edit", help="edit one photo: invert it under --source, regenerate it under --target")
    p.add_argument("image", metavar="IMAGE", help="the photo to edit (any size; PNG, JPEG, WebP, ...)")
    p.add_argument("--source", required=True, metavar="TEXT", help="what the photo shows, e.g. 'a cat on a sofa'")
    p.add_argument("--target", required=True, metavar="TEXT", help="what it should become, e.g. 'a tiger on a sofa'")
    p.add_argument(
        "-o", "--output", metavar="PATH", help="where to write the edit (.png, .jpg, .webp; default: IMAGE-edit.png)"
    )
    p.add_argument("--mask", metavar="PATH", help="edit only here: a mask image (white = edit) or 'auto'")
    _add_inversion_options(p)
    _add_model_options(p)
    p.set_defaults(run=run_edit)


def _add_invert(commands) -> None:
    p = commands.add_parser("invert", help="invert a photo and save the inversion (.safetensors) for later edits")
    p.add_argument("image", metavar="IMAGE", help="the photo to invert")
    p.add_argument("--source", required=True, metavar="TEXT", help="what the photo shows")
    p.add_argument("-o", "--output", metavar="PATH", help="the inversion file to write (default: IMAGE.safetensors)")
    _add_inversion_options(p)
    _add_model_options(p)
    p.set_defaults(run=run_invert)


def _add_regenerate(commands) -> None:
    p = commands.add_parser("regenerate", help="regenerate a saved inversion under a prompt (the source = the photo)")
    p.add_argument("inversion", metavar="INVERSION", help="an inversion file written by 'rnri invert'")
    p.add_argument("--prompt", required=True, metavar="TEXT", help="the prompt to regenerate under")
    p.add_argument(
        "-o", "--output", metavar="PATH", help="where to write the image (default: INVERSION-regenerated.png)"
    )
    p.add_argument("--guidance", type=_finite, metavar="SCALE", help="guidance scale (default: the inversion's)")
    p.add_argument("--mask", metavar="PATH", help="edit only here: a mask image (white = edit) or 'auto'")
    _add_model_options(p, model_help="the model (default: the one recorded in the file)")
    p.set_defaults(run=run_regenerate)


def _add_batch(commands) -> None:
    p = commands.add_parser(
        "batch",
        help="semantic data augmentation: every image in a folder under every target prompt",
        description="Invert every image in FOLDER once and regenerate it under each prompt of --targets. Outputs "
        "go to OUT/IMAGE-NAME/NN-PROMPT.png plus OUT/manifest.jsonl. Finished outputs are skipped, so an "
        "interrupted batch resumes where it stopped; a file that fails is reported and the batch goes on "
        "(exit code 1 at the end).",
    )
    p.add_argument("folder", metavar="FOLDER", help="a folder of images (.png, .jpg, .jpeg, .webp, .bmp, .tif)")
    p.add_argument(
        "--targets", required=True, metavar="FILE", help="a text file of target prompts, one a line ('#' comments)"
    )
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="the output folder (created if missing)")
    p.add_argument(
        "--source",
        metavar="TEXT",
        help="what the images show; an image's caption file IMAGE.txt beside it takes precedence",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_inversion_options(p)
    _add_model_options(p)
    p.set_defaults(run=run_batch)


def _add_inversion_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("inversion")
    g.add_argument("--method", default="rnri", choices=sorted(rnri.METHODS), help="inversion method (default: rnri)")
    g.add_argument(
        "--steps", type=_steps, metavar="N", help="sampling steps, 1 to 50 (default: the backbone's; LCM: 4, SD: 50)"
    )
    g.add_argument(
        "--guidance",
        type=_finite,
        metavar="SCALE",
        help=f"guidance scale of the inversion (default: the backbone's; LCM: {DEFAULT_GUIDANCE}, SD: 1, Turbo: 0)",
    )
    g.add_argument("--seed", type=int, default=0, metavar="N", help="seed of the stored noises (default: 0)")
    g.add_argument(
        "--strength", type=_strength, default=1.0, metavar="S", help="fraction of the chain to invert, in (0, 1]"
    )
    g.add_argument("--chain", choices=rnri.api.CHAINS, help="sampler chain (default: the stock one of the scheduler)")
    g.add_argument("--noise-correction", action="store_true", help="store noises that replay the chain exactly")
    g.add_argument(
        "--resolution", type=int, metavar="PIXELS", help="long side the photo is fitted to (default: the model's)"
    )
    g.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a solver option, e.g. --option iterations=2 (repeatable)",
    )


def _add_model_options(p: argparse.ArgumentParser, model_help: str | None = None) -> None:
    g = p.add_argument_group("model and speed")
    default_model = f"${MODEL_ENV}, else {rnri.DEFAULT_MODEL}"
    model_kinds = "an LCM, Stable Diffusion (1.5, 2.x, XL) or Turbo model"
    g.add_argument(
        "--model", help=model_help or f"Hub id or folder of {model_kinds}, or 'tiny' (default: {default_model})"
    )
    g.add_argument(
        "--lora", metavar="LORA", help="an LCM-LoRA (Hub id or folder) fused into the model, with LCMScheduler"
    )
    g.add_argument("--device", metavar="DEVICE", help="cuda, cuda:1, mps or cpu (default: the best available)")
    g.add_argument("--compile", action="store_true", help="torch.compile the UNet (slow start, faster edits)")
    g.add_argument("--channels-last", action="store_true", help="channels-last weights (GPU convolutions)")
    g.add_argument(
        "--offload",
        default="auto",
        choices=list(gpu.OFFLOAD_CHOICES),
        help="model CPU offload for small GPUs (default: auto, on below 6 GiB)",
    )


def _steps(text: str) -> int:
    value = int(text) if text.strip().isdigit() else 0
    if not 1 <= value <= 50:
        raise argparse.ArgumentTypeError(f"must be a whole number from 1 to 50, got {text!r}")
    return value


def _finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def _strength(text: str) -> float:
    value = _finite(text)
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text!r}")
    return value


# --- commands --------------------------------------------------------------------------------------------------


def run_edit(args: argparse.Namespace) -> int:
    """rnri edit: invert IMAGE under --source, regenerate under --target, write the image."""
    output = Path(args.output or f"{Path(args.image).stem}-edit.png")
    _check_output(output, tuple(OUTPUT_FORMATS))
    options, image, mask = inversion_kwargs(args), read_image(args.image), _read_mask(args.mask)
    pipe = load_model(args, args.model)
    start = time.perf_counter()
    inv = rnri.invert(pipe, args.source, image=image, **options)
    edit = rnri.regenerate(pipe, inv, args.target, mask=mask)
    save_image(edit, output)
    print(f"wrote {output} ({_cost(inv)}, {time.perf_counter() - start:.1f} s)")
    return 0


def run_invert(args: argparse.Namespace) -> int:
    """rnri invert: invert IMAGE under --source and save the whole Inversion."""
    output = Path(args.output or f"{Path(args.image).stem}{INVERSION_SUFFIX}")
    _check_output(output, (INVERSION_SUFFIX,))
    options, image = inversion_kwargs(args), read_image(args.image)
    pipe = load_model(args, args.model)
    inv = rnri.invert(pipe, args.source, image=image, **options)
    save_atomically(output, lambda tmp: save_inversion(inv, tmp, model=model_name(args.model)))
    print(f"wrote {output} ({_cost(inv)})")
    return 0


def run_regenerate(args: argparse.Namespace) -> int:
    """rnri regenerate: load a saved inversion and regenerate it under --prompt."""
    output = Path(args.output or f"{Path(args.inversion).name.removesuffix(INVERSION_SUFFIX)}-regenerated.png")
    _check_output(output, tuple(OUTPUT_FORMATS))
    model = args.model or saved_model(args.inversion)
    mask = _read_mask(args.mask)
    pipe = load_model(args, model)
    inv = load_inversion(args.inversion, device=gpu.execution_device(pipe))
    image = rnri.regenerate(pipe, inv, args.prompt, guidance_scale=args.guidance, mask=mask)
    save_image(image, output)
    print(f"wrote {output}")
    return 0


def run_batch(args: argparse.Namespace) -> int:
    """rnri batch: every image of FOLDER under every target prompt, resumable, per-file errors."""
    images, targets, options = list_images(args.folder), read_prompts(args.targets), inversion_kwargs(args)
    out = Path(args.output)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise CliError(f"cannot create the output folder {out}: {error.strerror or error}") from error
    jobs = plan_batch(images, targets, out)
    pending = [job for job in jobs if job.missing]
    pipe = load_model(args, args.model) if pending else None
    report = BatchReport(skipped=len(jobs) - len(pending))
    for job in _progress(pending, args.quiet):
        try:
            report.written += run_batch_job(pipe, job, args.source, options)
            report.done += 1
        except Exception as error:  # one bad file must not stop the batch
            report.failed += 1
            where = "" if isinstance(error, CliError) else f"{job.image}: "  # a CliError names its file
            _progress_write(f"rnri: error: {where}{_describe(error)}")
    write_manifest(out, jobs)
    print(report.summary(len(jobs)))
    return 1 if report.failed else 0


# --- batch -----------------------------------------------------------------------------------------------------


@dataclass
class BatchJob:
    """One image of a batch and the outputs it owes."""

    image: Path
    outputs: list[tuple[str, Path]]  # (target prompt, output path), one per target
    error: str | None = None  # a planning error (e.g. a name clash), reported when the job runs

    @property
    def missing(self) -> list[tuple[str, Path]]:
        return [(prompt, path) for prompt, path in self.outputs if not path.exists()]


@dataclass
class BatchReport:
    """Counts of a batch run."""

    done: int = 0  # images edited this run
    written: int = 0  # output files written this run
    skipped: int = 0  # images whose outputs all existed
    failed: int = 0

    def summary(self, total: int) -> str:
        return (
            f"batch: {total} image(s): {self.done} edited ({self.written} file(s) written), "
            f"{self.skipped} already done, {self.failed} failed"
        )


def plan_batch(images: list[Path], targets: list[str], out: Path) -> list[BatchJob]:
    """The outputs each image owes: OUT/STEM/NN-SLUG.png; a second image with the same stem is an error."""
    jobs, seen = [], {}
    for image in images:
        folder = out / image.stem
        outputs = [(t, folder / f"{i:02d}-{slug(t)}.png") for i, t in enumerate(targets)]
        job = BatchJob(image, outputs)
        if image.stem in seen:
            job.error = f"{image}: has the same name as {seen[image.stem].name}, their outputs would clash; rename one"
        seen.setdefault(image.stem, image)
        jobs.append(job)
    return jobs


def run_batch_job(pipe, job: BatchJob, source: str | None, options: dict[str, Any]) -> int:
    """Invert one image once and write each missing output; returns the number of files written."""
    if job.error:
        raise CliError(job.error)
    image, source = read_image(job.image), _source_prompt(job.image, source)
    inv = rnri.invert(pipe, source, image=image, **options)
    missing = job.missing
    missing[0][1].parent.mkdir(parents=True, exist_ok=True)
    for prompt, path in missing:
        save_image(rnri.regenerate(pipe, inv, prompt), path)
    return len(missing)


def _source_prompt(image: Path, default: str | None) -> str:
    caption = image.with_suffix(".txt")
    if caption.is_file():
        text = caption.read_text(encoding="utf-8").strip()
        if text:
            return text
    if not default:
        raise CliError(f"{image}: no source prompt: give --source or write a caption file {caption.name}")
    return default


def write_manifest(out: Path, jobs: list[BatchJob]) -> None:
    """OUT/manifest.jsonl: one JSON line per output file that exists (image, target prompt, output path)."""
    lines = [
        json.dumps({"image": str(job.image), "target": prompt, "output": str(path.relative_to(out))})
        for job in jobs
        for prompt, path in job.outputs
        if path.exists()
    ]
    save_atomically(out / "manifest.jsonl", lambda tmp: Path(tmp).write_text("".join(f"{x}\n" for x in lines)))


def _progress(jobs: list[BatchJob], quiet: bool):
    from tqdm.auto import tqdm

    return tqdm(jobs, desc="rnri batch", unit="image", disable=True if quiet else None)


def _progress_write(message: str) -> None:
    from tqdm.auto import tqdm

    tqdm.write(message, file=sys.stderr)


def list_images(folder: str) -> list[Path]:
    """The image files of ``folder`` (by suffix), sorted by name."""
    path = Path(folder)
    if not path.is_dir():
        raise CliError(f"{folder}: no such folder")
    images = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise CliError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)})")
    return images


def read_prompts(path: str) -> list[str]:
    """Prompts of a text file, one a line; blank lines and lines starting with '#' are skipped."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise CliError(f"cannot read the prompts file {path}: {_describe(error)}") from error
    prompts = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if not prompts:
        raise CliError(f"{path}: no prompts (one a line; '#' starts a comment)")
    return prompts


def slug(text: str, length: int = 40) -> str:
    """A file-name-safe form of a prompt: lowercase words joined by '-'."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:length].rstrip("-") or "prompt"


# --- shared helpers --------------------------------------------------------------------------------------------


def model_name(model: str | None) -> str:
    """--model, else $RNRI_MODEL, else the default model."""
    return model or os.environ.get(MODEL_ENV) or rnri.DEFAULT_MODEL


def load_model(args: argparse.Namespace, model: str | None):
    """The pipeline of ``model`` with the speed options of ``args`` applied."""
    pipe = rnri.load_pipeline(model_name(model), device=args.device, lora=args.lora)
    config = gpu.FastPath(channels_last=args.channels_last, compile=args.compile, cpu_offload=args.offload)
    fast = gpu.apply_fast_path(pipe, config)
    for reason in fast.skipped:
        print(f"rnri: note: skipped {reason}", file=sys.stderr)
    return fast.pipe


def inversion_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments of ``rnri.invert`` from the inversion options (solver options checked here)."""
    options = parse_options(args.option)
    check_solver_options(args.method, options)
    return {
        "method": args.method,
        "num_inference_steps": args.steps,
        "guidance_scale": args.guidance,
        "seed": args.seed,
        "strength": args.strength,
        "chain": args.chain,
        "noise_correction": args.noise_correction,
        "resolution": args.resolution,
        **options,
    }


def check_solver_options(method: str, options: dict[str, Any]) -> None:
    """Build the method's option type once, so a bad --option fails before the model loads."""
    config_type = rnri.METHODS[method].config_type
    if config_type is None:
        if options:
            raise CliError(f"--method {method} takes no --option, got {sorted(options)}")
        return
    allowed = [f.name for f in dataclasses.fields(config_type)]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise CliError(f"--method {method} has no option(s) {unknown}; its options are {allowed}")
    try:
        config_type(**options)
    except (TypeError, ValueError) as error:
        raise CliError(f"--option: {error}") from error


def parse_options(items: list[str]) -> dict[str, Any]:
    """``["iterations=2", "norm=l1"]`` -> ``{"iterations": 2, "norm": "l1"}`` (numbers and booleans parsed)."""
    options = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip().isidentifier():
            raise CliError(f"--option takes KEY=VALUE, got {item!r}")
        try:
            value = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError):
            value = text.strip()
        options[key.strip()] = value
    return options


def read_image(path: str | Path) -> Image.Image:
    """The image at ``path``, fully read; ``CliError`` naming the file when it is missing or not an image."""
    path = Path(path)
    if not path.is_file():
        raise CliError(f"{path}: no such file")
    try:
        image = Image.open(path)
        image.load()  # read it all now: a truncated file fails here, not halfway through an edit
        return image
    except (UnidentifiedImageError, Image.DecompressionBombError) as error:
        raise CliError(f"{path}: not a readable image ({_describe(error)})") from error
    except OSError as error:
        raise CliError(f"{path}: corrupt or truncated image ({_describe(error)})") from error


def _read_mask(mask: str | None) -> Image.Image | str | None:
    return mask if mask in (None, "auto") else read_image(mask)


def _check_output(path: Path, suffixes: tuple[str, ...]) -> None:
    """Refuse, before any work, an output path that cannot be written."""
    if path.suffix.lower() not in suffixes:
        raise CliError(f"{path}: the output must end in {' or '.join(suffixes)}")
    parent = path.parent
    if not parent.is_dir():
        raise CliError(f"{path}: cannot write there, {parent} is not a folder")
    if not os.access(parent, os.W_OK):
        raise CliError(f"{path}: cannot write there, {parent} is not writable")
    if path.is_dir():
        raise CliError(f"{path}: is a folder")


def save_image(image: Image.Image, path: Path) -> None:
    """Write ``image`` in the format of the path's suffix, atomically (no half-written file is ever left)."""
    image_format = OUTPUT_FORMATS.get(path.suffix.lower(), "PNG")
    extra = {"quality": 95} if image_format in ("JPEG", "WEBP") else {}
    save_atomically(path, lambda tmp: image.save(tmp, format=image_format, **extra))


def save_atomically(path: Path, write: Callable[[str], None]) -> None:
    """Call ``write`` on a temporary file beside ``path``, then rename it to ``path``."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(str(tmp))
        os.replace(tmp, path)
    except OSError as error:
        raise CliError(f"cannot write {path}: {error.strerror or error}") from error
    finally:
        tmp.unlink(missing_ok=True)


def _cost(inv: rnri.Inversion) -> str:
    return f"{inv.method}, {inv.unet_forwards} UNet forwards + {inv.unet_backwards} backwards"


def _describe(error: BaseException) -> str:
    return str(error) if isinstance(error, CliError) else f"{type(error).__name__}: {error}"


def dispatch(command: str, argv: list[str]) -> int:
    """Hand ``argv`` to the ``main`` of the module behind ``command``, imported only now."""
    module_name = DISPATCH[command]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        missing = error.name or ""
        if missing == module_name or module_name.startswith(missing + "."):
            print(f"rnri: error: 'rnri {command}' is not available: {module_name} is not installed", file=sys.stderr)
        else:
            print(
                f"rnri: error: 'rnri {command}' needs the module {missing!r}, which is not installed", file=sys.stderr
            )
        return 1
    entry = getattr(module, "main", None)
    if not callable(entry):
        print(f"rnri: error: 'rnri {command}' is not available yet: {module_name} has no main()", file=sys.stderr)
        return 1
    result = entry(argv)
    return result if isinstance(result, int) else 0
