"""The single-photo commands (``rnri edit``, ``invert``, ``regenerate``) and what every command shares: the model
opened once, the settings read from the flags once, a checked photo, an edit request."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path
from typing import Any

import rnri
import rnri.editor as ed
from rnri.cli.files import (
    INVERSION_SUFFIX,
    OUTPUT_FORMATS,
    CliError,
    _check_output,
    _mask_file,
    save_atomically,
    save_image,
)

MODEL_ENV = "RNRI_MODEL"


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
