"""The ``rnri`` parser: each subcommand's flags, the inversion's and the edit's made from the settings' one
description (:mod:`rnri.core.options`), and the lab's subcommands handed on whole."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Collection

import rnri
import rnri.editor as ed
from rnri.cli.batch import run_batch
from rnri.cli.commands import MODEL_ENV, run_edit, run_invert, run_regenerate

DISPATCH = {"bench": "rnri_lab.bench", "eval": "rnri_lab.evaluation"}  # subcommands owned by other modules


COMMANDS = ("edit", "invert", "regenerate", "batch")


BATCH = (
    "Invert every image in FOLDER once and regenerate it under each prompt of --targets. Outputs go to "
    "OUT/NAME-EXT/NN-PROMPT.png (a.jpg: OUT/a-jpg/, so a.png's never mix with it) plus OUT/manifest.jsonl. Finished "
    "outputs are skipped, never replaced, so an interrupted batch resumes where it stopped; a file that fails is "
    "reported and the batch goes on (exit code 1 at the end). Under 'accelerate launch' the images are shared out "
    "among the processes, each on its own device, and the first writes the one manifest (docs/batch.md)."
)


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
    _add_model_options(p, model_default=f"default: {recorded}")
    p.set_defaults(run=run_regenerate)


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


def _add_model_options(p: argparse.ArgumentParser, model_default: str | None = None) -> None:
    g = p.add_argument_group("model and speed")
    ed.add_model_flags(g, model_default=model_default or f"default: ${MODEL_ENV}, else {rnri.DEFAULT_MODEL}")
    g.add_argument("--device", metavar="DEVICE", help="cuda, cuda:1, mps or cpu (default: the best available)")


def dispatch(command: str, argv: list[str]) -> int:
    """Hand ``argv`` to the ``main`` of the module behind ``command``, imported only now."""
    module_name = DISPATCH[command]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        missing = error.name or ""
        if missing == module_name or module_name.startswith(missing + "."):
            print(
                f"rnri: error: 'rnri {command}' is the lab's ({module_name}), which is not installed with rnri: "
                "run it from a clone of the repository (README, 'Layout')",
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
