"""The command line's files: what it reads and writes, outputs checked before any work (never an input, never
overwritten unasked), written atomically (a temporary file moved into place), and errors said in one line."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import rnri

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger("rnri.cli")


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")  # what batch reads


OUTPUT_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}  # what edits are written as


INVERSION_SUFFIX = ".safetensors"


class CliError(Exception):
    """A user error: printed as one line, exit code 1."""


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


def message_of(error: Exception) -> str:
    """The one line a user error is told in; a failure that is no user's is logged with its traceback."""
    if type(error).__name__ == "OutOfMemoryError":  # torch's, not imported here
        return f"out of GPU memory ({error}); try --offload on or a smaller --resolution"
    if isinstance(error, CliError | ValueError | OSError | rnri.ModelLoadError | rnri.InversionError):
        return str(error)
    log.exception("unexpected failure")
    return _describe(error)
