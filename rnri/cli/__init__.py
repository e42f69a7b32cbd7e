"""The ``rnri`` command line (also ``python -m rnri``): a thin front end over the public API and the editor service.

rnri edit photo.jpg --source "a cat on a sofa" --target "a tiger on a sofa" -o tiger.png
rnri invert photo.jpg --source "a cat on a sofa" -o cat.safetensors
rnri regenerate cat.safetensors --prompt "a fox on a sofa" -o fox.png
rnri batch photos/ --targets prompts.txt -o augmented/
rnri bench ... | rnri eval ...   (handed to rnri_lab.bench.main / rnri_lab.evaluation.main, from a checkout)

The parser is :mod:`rnri.cli.parser`, the single-photo commands :mod:`rnri.cli.commands`, the batch engine (with
accelerate's launch) :mod:`rnri.cli.batch`, and checked, atomic file writing :mod:`rnri.cli.files`. Nothing heavy is
imported before a command needs it: ``rnri --help`` loads neither torch nor diffusers.
"""

from __future__ import annotations

import sys
import warnings

import rnri.editor as ed
from rnri.cli.commands import MODEL_ENV
from rnri.cli.files import CliError, message_of
from rnri.cli.parser import DISPATCH, build_parser, dispatch

__all__ = ["DISPATCH", "MODEL_ENV", "CliError", "build_parser", "main"]


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
            print(f"rnri: error: {message_of(error)}", file=sys.stderr)
            return 1


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"rnri: warning: {message}", file=sys.stderr)
