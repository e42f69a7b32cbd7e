"""``rnri batch``: every image of a folder under every target prompt, resumable (what is written is skipped on the
next run), an error per file rather than per run, images edited together in batches, and under accelerate's launch
each process its share, the manifest written once."""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import os
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import rnri
import rnri.editor as ed
from rnri.cli.commands import load_model, read_photo, settings_of
from rnri.cli.files import IMAGE_SUFFIXES, CliError, _describe, message_of, save_atomically, save_image

# How long processes done with their share wait for the slowest (the process group's timeout; torch's default,
# minutes, would stop a long batch whose shares end at different times).
FINISH_TIMEOUT = datetime.timedelta(days=30)


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
        _progress_write(f"rnri: error: {job.image}: {message_of(error)}")

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
