"""The ``rnri`` command line (also ``python -m rnri``): a thin front end over the public API and the editor service.

rnri edit photo.jpg --source "a cat on a sofa" --target "a tiger on a sofa" -o tiger.png
rnri invert photo.jpg --source "a cat on a sofa" -o cat.safetensors
rnri regenerate cat.safetensors --prompt "a fox on a sofa" -o fox.png
rnri batch photos/ --targets prompts.txt -o augmented/
rnri bench ... | rnri eval ...   (handed to rnri_lab.bench.main / rnri_lab.evaluation.main)

Nothing heavy is imported before a command needs it: ``rnri --help`` loads neither torch nor diffusers.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import importlib
import json
import logging
import os
import re
import shlex
import sys
import warnings
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import rnri
import rnri.editor as ed

if TYPE_CHECKING:
    from PIL import Image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")  # what batch reads
OUTPUT_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}  # what edits are written as
INVERSION_SUFFIX = ".safetensors"
DISPATCH = {"bench": "rnri_lab.bench", "eval": "rnri_lab.evaluation"}  # subcommands owned by other modules
COMMANDS = ("edit", "invert", "regenerate", "batch")
MODEL_ENV = "RNRI_MODEL"
FINISH_TIMEOUT = datetime.timedelta(days=30)  # how long processes done with their share wait for the slowest (the
# process group's timeout; torch's default, minutes, would stop a long batch whose shares end at different times)
log = logging.getLogger("rnri.cli")


class CliError(Exception):
    """A user error: printed as one line, exit code 1."""


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 ok, 1 error, 2 bad usage)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in DISPATCH:
        return dispatch(argv[0], argv[1:])
    ed.configure_logging()  # before anything is imported that logs (a command's --help imports the solvers)
    ed.share_cpu_politely()  # before torch loads
    args = build_parser(full=argv[:1]).parse_args(argv)
    ed.configure_logging(args.log_level)
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        try:
            return args.run(args)
        except KeyboardInterrupt:
            print("rnri: interrupted", file=sys.stderr)
            return 130
        except Exception as error:
            print(f"rnri: error: {_message(error)}", file=sys.stderr)
            return 1


def _message(error: Exception) -> str:
    """The one line a user error is told in; a failure that is no user's is logged with its traceback."""
    if type(error).__name__ == "OutOfMemoryError":  # torch's, not imported here
        return f"out of GPU memory ({error}); try --offload on or a smaller --resolution"
    if isinstance(error, CliError | ValueError | OSError | rnri.ModelLoadError | rnri.InversionError):
        return str(error)
    log.exception("unexpected failure")
    return _describe(error)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"rnri: warning: {message}", file=sys.stderr)


# --- the parser ------------------------------------------------------------------------------------------------


def build_parser(full: Collection[str] = COMMANDS) -> argparse.ArgumentParser:
    """The parser of every subcommand; only those in ``full`` get their options (which need the solvers, so torch):
    the others parse nothing but ``--help`` (README's documented flags are checked against the full parser)."""
    parser = argparse.ArgumentParser(
        prog="rnri",
        description="Edit photos by describing them: invert a photo on a diffusion model (an LCM by default; Stable "
        "Diffusion, SDXL, Turbo; by default DDIM inversion with noise correction, the best measured; Newton-Raphson "
        "methods by --method), then regenerate it under a new prompt.",
        epilog="Run 'rnri COMMAND --help' for a command's options. The model comes from --model, else $RNRI_MODEL, "
        f"else {rnri.DEFAULT_MODEL}; 'tiny' is a built-in test model (no download).",
    )
    parser.add_argument("--version", action="version", version=f"rnri {rnri.__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    for name, (help_text, add) in SUBCOMMANDS.items():
        sub = commands.add_parser(name, help=help_text, **({"description": BATCH} if name == "batch" else {}))
        if name in full:
            add(sub)
    for name, module in DISPATCH.items():
        sub = commands.add_parser(name, help=f"run {module} (all arguments are passed on)", add_help=False)
        sub.add_argument("rest", nargs=argparse.REMAINDER)
        sub.set_defaults(run=lambda args, name=name: dispatch(name, args.rest))
    return parser


def _add_edit(p: argparse.ArgumentParser) -> None:
    p.add_argument("image", metavar="IMAGE", help="the photo to edit (any size; PNG, JPEG, WebP, ...)")
    p.add_argument("--source", required=True, metavar="TEXT", help="what the photo shows, e.g. 'a cat on a sofa'")
    p.add_argument("--target", required=True, metavar="TEXT", help="what it should become, e.g. 'a tiger on a sofa'")
    p.add_argument(
        "-o", "--output", metavar="PATH", help="where to write the edit (.png, .jpg, .webp; default: IMAGE-edit.png)"
    )
    p.add_argument("--mask", metavar="PATH", help="edit only here: a mask image (white = edit) or 'auto'")
    _add_overwrite(p)
    _add_inversion_options(p)
    _add_edit_options(p)
    _add_model_options(p)
    p.set_defaults(run=run_edit)


def _add_invert(p: argparse.ArgumentParser) -> None:
    p.add_argument("image", metavar="IMAGE", help="the photo to invert")
    p.add_argument("--source", required=True, metavar="TEXT", help="what the photo shows")
    p.add_argument("-o", "--output", metavar="PATH", help="the inversion file to write (default: IMAGE.safetensors)")
    _add_overwrite(p)
    _add_inversion_options(p)
    _add_model_options(p)
    p.set_defaults(run=run_invert)


def _add_regenerate(p: argparse.ArgumentParser) -> None:
    p.add_argument("inversion", metavar="INVERSION", help="an inversion file written by 'rnri invert'")
    p.add_argument("--prompt", required=True, metavar="TEXT", help="the prompt to regenerate under")
    p.add_argument(
        "-o", "--output", metavar="PATH", help="where to write the image (default: INVERSION-regenerated.png)"
    )
    guidance = {"guidance_scale": ed.settings_of(rnri.InversionSettings)["guidance_scale"]}
    ed.add_arguments(p, guidance, {"guidance_scale": "the inversion's"})
    p.add_argument("--mask", metavar="PATH", help="edit only here: a mask image (white = edit) or 'auto'")
    _add_overwrite(p)
    recorded = "the file's, where built in or the default model; another must be named here"
    _add_model_options(p, model_help=f"the model (default: {recorded})")
    p.set_defaults(run=run_regenerate)


BATCH = (
    "Invert every image in FOLDER once and regenerate it under each prompt of --targets. Outputs go to "
    "OUT/NAME-EXT/NN-PROMPT.png (a.jpg: OUT/a-jpg/, so a.png's never mix with it) plus OUT/manifest.jsonl. Finished "
    "outputs are skipped, never replaced, so an interrupted batch resumes where it stopped; a file that fails is "
    "reported and the batch goes on (exit code 1 at the end). Under 'accelerate launch' the images are shared out "
    "among the processes, each on its own device, and the first writes the one manifest (docs/batch.md)."
)


def _add_batch(p: argparse.ArgumentParser) -> None:
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
    p.add_argument(
        "--batch-size",
        type=positive_int,
        default=1,
        metavar="N",
        help="images of one size inverted and regenerated together, every UNet call on all N (faster on a GPU, "
        "memory grows with N; the outputs are batch size 1's up to float rounding) (default: 1)",
    )
    _add_inversion_options(p)
    _add_edit_options(p)
    _add_model_options(p)
    p.set_defaults(run=run_batch)


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


def _add_overwrite(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing output file (without it an existing file is refused; an input never is replaced)",
    )


SUBCOMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None]]] = {
    "edit": ("edit one photo: invert it under --source, regenerate it under --target", _add_edit),
    "invert": ("invert a photo and save the inversion (.safetensors) for later edits", _add_invert),
    "regenerate": ("regenerate a saved inversion under a prompt (the source = the photo)", _add_regenerate),
    "batch": ("semantic data augmentation: every image in a folder under every target prompt", _add_batch),
}


def _add_inversion_options(p: argparse.ArgumentParser) -> None:
    """The inversion's settings, each flag made from its one description (``rnri.core.settings``)."""
    g = p.add_argument_group("inversion")
    settings = ed.settings_of(rnri.InversionSettings)
    method = settings.pop("method")
    g.add_argument("--method", default=method.default, choices=sorted(rnri.METHODS), help=f"{method.option.help}")
    add_defaults = {
        "num_inference_steps": f"the model's: {ed.steps_defaults()}",
        "guidance_scale": f"the model's: {ed.guidance_defaults()}",
        "chain": "the scheduler's own",
        "noise_correction": "on where the chain injects noise",
        "resolution": "the model's",
    }
    ed.add_arguments(g, settings, add_defaults)
    options = "; ".join(f"{name}: {ed.describe_options(m.config_type)}" for name, m in rnri.METHODS.items())
    g.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE[,KEY=VALUE]",
        help=f"options of the method, repeatable (see rnri/core/solvers/): {options}",
    )


def _add_edit_options(p: argparse.ArgumentParser) -> None:
    """The edit's own guidance, a setting apart from the inversion's ``--guidance`` (they differ on Stable Diffusion,
    which inverts at 1 and edits at 7.5), its flag made from its one description (``rnri.editor.EditOptions``)."""
    g = p.add_argument_group("edit")
    guidance = {"edit_guidance": ed.settings_of(ed.EditOptions)["edit_guidance"]}
    ed.add_arguments(g, guidance, {"edit_guidance": f"the model's: {ed.guidance_defaults(edit=True)}"})


def _add_model_options(p: argparse.ArgumentParser, model_help: str | None = None) -> None:
    g = p.add_argument_group("model and speed")
    default_model = f"${MODEL_ENV}, else {rnri.DEFAULT_MODEL}"
    model_kinds = "an LCM, Stable Diffusion (1.5, 2.x, XL), Turbo or FLUX.1 model"
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
        choices=list(ed.OFFLOAD_CHOICES),
        help="model CPU offload for small GPUs (default: auto, on below 6 GiB)",
    )
    g.add_argument("--log-level", default="warning", choices=ed.LEVELS, help="what rnri logs (default: warning)")


# --- commands --------------------------------------------------------------------------------------------------


def run_edit(args: argparse.Namespace) -> int:
    """rnri edit: invert IMAGE under --source, regenerate under --target, write the image."""
    output = Path(args.output or f"{Path(args.image).stem}-edit.png")
    _check_output(output, tuple(OUTPUT_FORMATS), args.overwrite, {"photo": args.image, "mask": _mask_file(args.mask)})
    photo, settings = read_photo(args.image), settings_of(args)
    editor = ed.Editor(load_model(args, args.model).pipe)
    request = edit_request(editor, photo, args.source, args.target, settings, args.edit_guidance, args.mask)
    result = editor.edit(request)
    save_image(result.image, output, args.overwrite)
    print(f"wrote {output} ({_cost(result.report)})")
    return 0


def run_invert(args: argparse.Namespace) -> int:
    """rnri invert: invert IMAGE under --source and save the whole Inversion."""
    output = Path(args.output or f"{Path(args.image).stem}{INVERSION_SUFFIX}")
    _check_output(output, (INVERSION_SUFFIX,), args.overwrite, {"photo": args.image})
    photo, settings = read_photo(args.image), settings_of(args)
    pipe = load_model(args, args.model).pipe
    source = ed.clean_prompt(args.source, "source prompt", required=False)
    inv = rnri.invert(pipe, source, image=photo.image, settings=settings)
    save_atomically(output, lambda tmp: rnri.save_inversion(inv, tmp, model=model_name(args.model)), args.overwrite)
    print(f"wrote {output} ({inv.method}, {inv.unet_forwards} UNet forwards + {inv.unet_backwards} backwards)")
    return 0


def run_regenerate(args: argparse.Namespace) -> int:
    """rnri regenerate: load a saved inversion and regenerate it under --prompt."""
    output = Path(args.output or f"{Path(args.inversion).name.removesuffix(INVERSION_SUFFIX)}-regenerated.png")
    inputs = {"inversion file": args.inversion, "mask": _mask_file(args.mask)}
    _check_output(output, tuple(OUTPUT_FORMATS), args.overwrite, inputs)
    model = regenerate_model(args.inversion, args.model)
    inv = rnri.load_inversion(args.inversion)  # refused before a model is loaded
    mask = args.mask if args.mask in (None, "auto") else ed.load_layer(args.mask)
    pipe = load_model(args, model).pipe
    prompt = ed.clean_prompt(args.prompt, "prompt")
    image = rnri.regenerate(pipe, inv, prompt, guidance_scale=args.guidance_scale, mask=mask)
    save_image(image, output, args.overwrite)
    print(f"wrote {output}")
    return 0


def run_batch(args: argparse.Namespace) -> int:
    """rnri batch: every image of FOLDER under every target prompt, resumable, per-file errors; under accelerate
    launch, this process's share of the images."""
    images, targets, settings = list_images(args.folder), read_prompts(args.targets), settings_of(args)
    out = Path(args.output)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise CliError(f"cannot create the output folder {out}: {error.strerror or error}") from error
    launch = Launch.start(args.device)
    jobs = list(enumerate(plan_batch(images, targets, out)))
    # Batches are cut from the whole list, whatever is done, so that an image is edited with the same others
    # however many processes share the work and however often it was interrupted: outputs depend on --batch-size.
    chunks = launch.share([jobs[start : start + args.batch_size] for start in range(0, len(jobs), args.batch_size)])
    mine = [entry for chunk in chunks for entry in chunk]
    pending = [job for _, job in mine if job.error or job.missing]  # a refused image fails on every run
    report = BatchReport(skipped=len(mine) - len(pending))
    pipe = functools.cache(lambda: load_model(args, args.model, launch.device).pipe)  # loaded once there is work
    with _progress(len(pending), args.quiet or not launch.is_main) as bar:
        for chunk in chunks:
            owing = sum(1 for _, job in chunk if job.error or job.missing)
            if owing:
                run_batch_chunk(pipe, [job for _, job in chunk], args.source, settings, args.edit_guidance, report)
                bar.update(owing)
    reports, lines = zip(*launch.gather((report, manifest_lines(out, mine))))
    if launch.is_main:
        report = BatchReport.total(reports)
        write_manifest(out, [line for part in lines for line in part])
        print(report.summary(len(jobs)), flush=True)
    launch.finish()
    return 1 if any(r.failed for r in reports) else 0


def regenerate_model(inversion: str, model: str | None) -> str:
    """The model to regenerate with: ``model`` (--model), else the one the file names where rnri would load it
    unasked (built in, or the default model); a file is anyone's, so any other must be named (``CliError``)."""
    recorded = rnri.saved_model(inversion)
    if model:
        if recorded not in (None, model):
            print(f"rnri: note: {inversion} was made with {recorded!r}; regenerating with {model!r}", file=sys.stderr)
        return model
    if recorded is None or recorded == model_name(None) or recorded in rnri.BUILTIN_MODELS:
        return recorded or model_name(None)
    raise CliError(
        f"{inversion} was made with the model {recorded!r}; rnri loads no model just because a file names it: "
        f"pass --model {shlex.quote(recorded)} to regenerate with it"
    )


# --- batch -----------------------------------------------------------------------------------------------------


@dataclass
class BatchJob:
    """One image of a batch and the outputs it owes."""

    image: Path
    outputs: list[tuple[str, Path]]  # (target prompt, output path), one per target
    error: str | None = None  # a planning error (a name clash), reported as the image's failure on every run

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

    def fail(self, job: BatchJob, error: Exception) -> None:
        """Count ``job`` as failed and say why, above the progress bar."""
        self.failed += 1
        _progress_write(f"rnri: error: {job.image}: {_message(error)}")

    def add(self, done: int, written: int) -> None:
        self.done, self.written = self.done + done, self.written + written

    @classmethod
    def total(cls, reports: Sequence[BatchReport]) -> BatchReport:
        """The counts of all processes together."""
        return cls(*(sum(getattr(r, name) for r in reports) for name in ("done", "written", "skipped", "failed")))

    def summary(self, total: int) -> str:
        return (
            f"batch: {total} image(s): {self.done} edited ({self.written} file(s) written), "
            f"{self.skipped} already done, {self.failed} failed"
        )


def plan_batch(images: list[Path], targets: list[str], out: Path) -> list[BatchJob]:
    """The outputs each image owes: OUT/NAME-EXT/NN-SLUG.png. Folders differing only in case (a.JPG, a.jpg) would
    be one on a case-insensitive disk: the second image is refused."""
    jobs, seen = [], {}
    for image in images:
        folder = out / output_folder(image)
        outputs = [(t, folder / f"{i:02d}-{slug(t)}.png") for i, t in enumerate(targets)]
        job = BatchJob(image, outputs)
        first = seen.setdefault(folder.name.casefold(), image)
        if first != image:
            job.error = f"its outputs would share a folder with {first.name}'s where case is ignored; rename one"
        jobs.append(job)
    return jobs


def output_folder(image: Path) -> str:
    """The folder of an image's outputs, its whole file name: ``a.jpg`` -> ``a-jpg`` (no suffix holds a '-', so two
    names never give one folder; a '.' would clash with the image itself where OUT is FOLDER)."""
    return f"{image.stem}-{image.suffix[1:]}"


@dataclass
class BatchItem:
    """A job of a batch ready to invert: its photo and source prompt read."""

    job: BatchJob
    photo: ed.Photo
    source: str


def run_batch_chunk(
    pipe: Callable[[], Any],
    jobs: list[BatchJob],
    source: str | None,
    settings: rnri.InversionSettings,
    edit_guidance: float | None,
    report: BatchReport,
) -> None:
    """Write what ``jobs`` (one --batch-size chunk of the list) still owe, photos of one size together. A batch is
    always the chunk's whole size group, finished photos included, so that a resumed run does the arithmetic of an
    uninterrupted one; a batch that fails is redone photo by photo, so only the bad file is reported."""
    items = []
    for job in jobs:
        try:
            items.append(batch_item(job, source))
        except Exception as error:  # one bad file must not stop the batch
            if job.error or job.missing:
                report.fail(job, error)
    by_size: dict[tuple[int, int], list[BatchItem]] = {}
    for item in items:
        by_size.setdefault(item.photo.image.size, []).append(item)
    for group in by_size.values():
        owing = [item for item in group if item.job.missing]
        if not owing:
            continue
        try:
            report.add(len(owing), edit_together(pipe(), group, settings, edit_guidance))
        except Exception as error:
            if len(group) == 1:
                report.fail(group[0].job, error)
                continue
            for item in owing:
                try:
                    report.add(1, edit_together(pipe(), [item], settings, edit_guidance))
                except Exception as alone:
                    report.fail(item.job, alone)


def batch_item(job: BatchJob, source: str | None) -> BatchItem:
    """``job`` with its photo read and its source prompt found; a planning error, an unreadable photo or no source
    prompt raises."""
    if job.error:
        raise CliError(job.error)
    photo = read_photo(job.image)
    return BatchItem(job, photo, ed.clean_prompt(_source_prompt(job.image, source), "source prompt"))


def edit_together(
    pipe: Any, items: list[BatchItem], settings: rnri.InversionSettings, edit_guidance: float | None
) -> int:
    """Invert ``items`` (photos of one size) as one batch and regenerate them together under each target prompt that
    one of them still owes (at ``edit_guidance``, None: the backbone's), writing the missing outputs; the number of
    files written."""
    photos = [item.photo.image for item in items]
    invs = rnri.invert(pipe, [item.source for item in items], image=photos, settings=settings)
    guidance = rnri.default_guidance(pipe, edit=True) if edit_guidance is None else edit_guidance
    written = 0
    for k, (target, _) in enumerate(items[0].job.outputs):
        paths = [item.job.outputs[k][1] for item in items]
        if all(path.exists() for path in paths):
            continue
        prompts = [ed.clean_prompt(target, "target prompt")] * len(items)
        for image, path in zip(rnri.regenerate(pipe, invs, prompts, guidance_scale=guidance), paths):
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                save_image(image, path)
                written += 1
    return written


@dataclass
class Launch:
    """This process's place among those ``accelerate launch`` started: process ``index`` of ``count`` takes every
    count-th batch of --batch-size images; one process alone is index 0 of 1 (and accelerate is not imported)."""

    index: int = 0
    count: int = 1
    device: str | None = None  # this process's device; None: --device's
    state: Any = None  # accelerate's PartialState where several processes share the work

    @classmethod
    def start(cls, device: str | None) -> Launch:
        """Join the processes accelerate launched (torch.distributed: NCCL on GPUs, gloo on the CPU); each takes its
        own GPU unless ``device`` is "cpu" or there is none."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls(device=device)
        import torch
        from accelerate import PartialState

        cpu = device == "cpu" or not torch.cuda.is_available()
        state = PartialState(cpu=cpu, timeout=FINISH_TIMEOUT)
        if state.num_processes != world:
            raise CliError(f"accelerate started {world} processes, but they could not join ({state.distributed_type})")
        return cls(state.process_index, state.num_processes, "cpu" if cpu else str(state.device), state)

    @property
    def is_main(self) -> bool:
        return self.index == 0

    def share(self, chunks: list) -> list:
        """This process's chunks of the work: every count-th by position in the whole list, the same in every process
        and on every run (whatever is already done), so that no output is made twice, or by nobody."""
        return chunks[self.index :: self.count]

    def gather(self, value: Any) -> list[Any]:
        """Every process's ``value``, in process order (waits for all of them)."""
        if self.state is None:
            return [value]
        from accelerate.utils import gather_object

        return gather_object([value])

    def finish(self) -> None:
        """Wait for every process (the first has written the manifest), then leave the process group."""
        if self.state is not None:
            self.state.wait_for_everyone()
            self.state.destroy_process_group()


def _source_prompt(image: Path, default: str | None) -> str:
    caption = image.with_suffix(".txt")
    if caption.is_file():
        text = caption.read_text(encoding="utf-8").strip()
        if text:
            return text
    if not default:
        raise CliError(f"no source prompt: give --source or write a caption file {caption.name}")
    return default


def manifest_lines(out: Path, jobs: list[tuple[int, BatchJob]]) -> list[tuple[int, str]]:
    """The manifest's lines of ``jobs`` (each with its place in the whole batch): one JSON line per output file that
    exists (image, target prompt, output path)."""
    return [
        (index, json.dumps({"image": str(job.image), "target": prompt, "output": str(path.relative_to(out))}))
        for index, job in jobs
        if not job.error
        for prompt, path in job.outputs
        if path.exists()
    ]


def write_manifest(out: Path, lines: list[tuple[int, str]]) -> None:
    """OUT/manifest.jsonl from every process's lines, in the order of the images (a target's after the one before)."""
    text = "".join(f"{line}\n" for _, line in sorted(lines, key=lambda entry: entry[0]))
    save_atomically(out / "manifest.jsonl", lambda tmp: Path(tmp).write_text(text), overwrite=True)  # batch's own


def _progress(total: int, quiet: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="rnri batch", unit="image", disable=True if quiet else None)


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


def load_model(args: argparse.Namespace, model: str | None, device: str | None = None) -> ed.Resident:
    """The pipeline of ``model`` on ``device`` (default --device's) with the speed options of ``args`` applied; what
    was skipped, as notes."""
    fast = ed.FastPath(channels_last=args.channels_last, compile=args.compile, cpu_offload=args.offload)
    resident = ed.open_model(model_name(model), device=device or args.device, fast=fast, lora=args.lora)
    for note in resident.notes:
        print(f"rnri: note: {note}", file=sys.stderr)
    return resident


def settings_of(args: argparse.Namespace) -> rnri.InversionSettings:
    """The inversion's settings from the flags (each checked by argparse) and the method's --option values."""
    plain = rnri.InversionSettings(**{name: getattr(args, name) for name in ed.settings_of(rnri.InversionSettings)})
    config_type = rnri.METHODS[args.method].config_type
    options = read_options(config_type, args.option, f"--method {args.method}")
    return ed.with_method(plain, args.method, options)


def read_options(config_type: type | None, items: list[str], owner: str) -> dict[str, Any]:
    """``--option`` values in the one option syntax (``KEY=VALUE[,KEY=VALUE]``), checked; ``CliError`` otherwise."""
    try:
        return ed.read_options(config_type, items, owner)
    except ValueError as error:
        raise CliError(f"--option: {error}") from error


def edit_request(
    editor: ed.Editor,
    photo: ed.Photo,
    source: str,
    target: str,
    settings: rnri.InversionSettings,
    edit_guidance: float | None,
    mask: str | None,
) -> ed.EditRequest:
    """One edit for the editor service: ``edit_guidance`` None is the backbone's; ``mask`` is None, ``"auto"`` or a
    mask image's path."""
    painted = None if mask in (None, "auto") else ed.read_region([mask], photo.image.size)
    guidance = editor.edit_guidance if edit_guidance is None else edit_guidance
    choices = ed.Choices(settings, guidance, ed.LocalEdit(auto=mask == "auto"))
    source = ed.clean_prompt(source, "source prompt", required=False)
    target = ed.clean_prompt(target, "target prompt")
    return ed.EditRequest(photo, painted, source, target, choices)


def read_photo(path: str | Path) -> ed.Photo:
    """The photo at ``path`` through the editor's one loader, at its own size; what was repaired, as notes."""
    photo = ed.load_photo(Path(path), max_side=None)
    for notice in photo.notices:
        print(f"rnri: note: {Path(path).name}: {notice}", file=sys.stderr)
    return photo


def _cost(report: ed.Report) -> str:
    d = report.details
    psnr = "identical" if d["reconstruction_psnr_db"] is None else f"{d['reconstruction_psnr_db']:.1f} dB"
    return (
        f"{d['method']}, {d['inversion_unet_forwards']} UNet forwards + {d['inversion_unet_backwards']} backwards to "
        f"invert, reconstruction PSNR {psnr}, {d['request_seconds']:.1f} s"
    )


def _check_output(path: Path, suffixes: tuple[str, ...], overwrite: bool, inputs: dict[str, str | None]) -> None:
    """Refuse, before any work, an output path that cannot be written, an existing file without ``overwrite``, and
    any of the command's ``inputs`` (what each is: its path) even with it."""
    _check_writable(path, suffixes)
    if not os.path.lexists(path):
        return
    for what, given in inputs.items():
        if given and _same_file(path, given):
            raise CliError(f"{path}: is the input {what}; rnri never writes over an input, choose another -o")
    if not overwrite:
        raise CliError(f"{path}: already exists; pass --overwrite to replace it, or choose another -o")


def _mask_file(mask: str | None) -> str | None:
    return None if mask == "auto" else mask


def _same_file(a: Path | str, b: Path | str) -> bool:
    """Whether two paths name one file (through links, case-insensitive disks and all); False if either is missing."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _check_writable(path: Path, suffixes: tuple[str, ...]) -> None:
    if path.suffix.lower() not in suffixes:
        raise CliError(f"{path}: the output must end in {' or '.join(suffixes)}")
    parent = path.parent
    if not parent.is_dir():
        raise CliError(f"{path}: cannot write there, {parent} is not a folder")
    if not os.access(parent, os.W_OK):
        raise CliError(f"{path}: cannot write there, {parent} is not writable")
    if path.is_dir():
        raise CliError(f"{path}: is a folder")


def save_image(image: Image.Image, path: Path, overwrite: bool = False) -> None:
    """Write ``image`` in the format of the path's suffix, atomically (no half-written file is ever left)."""
    image_format = OUTPUT_FORMATS.get(path.suffix.lower(), "PNG")
    extra = {"quality": 95} if image_format in ("JPEG", "WEBP") else {}
    save_atomically(path, lambda tmp: image.save(tmp, format=image_format, **extra), overwrite)


def save_atomically(path: Path, write: Callable[[str], None], overwrite: bool = False) -> None:
    """Call ``write`` on a temporary file beside ``path``, then move it to ``path``; an existing file there is
    replaced only with ``overwrite``, also one that appeared while rnri worked."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(str(tmp))
        _move(tmp, path, overwrite)
    except OSError as error:
        raise CliError(f"cannot write {path}: {error.strerror or error}") from error
    finally:
        tmp.unlink(missing_ok=True)


def _move(tmp: Path, path: Path, overwrite: bool) -> None:
    """Rename ``tmp`` to ``path``; without ``overwrite`` by a hard link, which fails where ``path`` exists."""
    if overwrite:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)  # the caller then removes tmp
    except FileExistsError:
        raise _appeared(path) from None
    except OSError:  # a file system without hard links (FAT, some network shares): look, then rename
        if os.path.lexists(path):
            raise _appeared(path) from None
        os.replace(tmp, path)


def _appeared(path: Path) -> CliError:
    return CliError(f"{path}: a file appeared there while rnri worked; not replaced (pass --overwrite to replace it)")


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
            print(
                f"rnri: error: 'rnri {command}' is the lab's ({module_name}), which is not installed with rnri: run it "
                "from a clone of the repository (README, 'Benchmarks')",
                file=sys.stderr,
            )
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
