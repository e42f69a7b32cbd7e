"""A scratch folder per server run, the folders of runs that died cleaned at the next start, and the only files
of the machine a client may name: those in it.

Gradio writes every upload and every image it serves to its cache folder and sweeps only the files of the process
that is running, so a server killed (``kill -9``, a crash, SIGTERM) leaves its files behind for good. Each run here
writes into ``<base>/run-<pid>-<time>`` and holds an exclusive lock on a file in it while it lives; a new start
deletes every run folder whose lock it can take (its owner is gone), and a run deletes its own folder at exit.
``<base>`` is ``rnri-runs``, a name no ``import`` can take for a package (``rnri`` was imported as one by Python
started in the temp folder).
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

from rnri.editor.uploads import InputError

try:
    import fcntl
except ImportError:  # Windows: runs are not cleaned up after a crash
    fcntl = None

log = logging.getLogger("rnri.scratch")
LOCK = ".lock"
BASE = "rnri-runs"  # not a valid module name: Python started in the temp folder cannot import it as ``rnri``
NOT_SENT = "The {what} could not be read; please send it again."  # every refusal of a named file, whatever the cause


def default_base() -> Path:
    """Where run folders go: ``$GRADIO_TEMP_DIR`` if set, else the system's temp folder, under ``rnri-runs``."""
    return Path(os.environ.get("GRADIO_TEMP_DIR") or tempfile.gettempdir()) / BASE


def start_run(base: Path | None = None) -> Path:
    """A new run folder under ``base`` (locked while this process lives, deleted at exit) after deleting the
    folders of runs that are gone; returns it."""
    base = base or default_base()
    base.mkdir(parents=True, exist_ok=True)
    removed = sum(_remove_if_dead(folder) for folder in base.glob("run-*"))
    if removed:
        log.info("deleted the scratch folders of %d earlier runs that ended without cleaning up", removed)
    folder = base / f"run-{os.getpid()}-{time.time_ns()}"
    folder.mkdir()
    lock = open(folder / LOCK, "w")  # noqa: SIM115  held open, and locked, for the life of the process
    if fcntl is not None:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    atexit.register(_finish, folder, lock)
    return folder


def _remove_if_dead(folder: Path) -> bool:
    """Delete ``folder`` if no living process holds its lock; whether it did."""
    if fcntl is None or not folder.is_dir():
        return False
    try:
        with open(folder / LOCK, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False  # its run is alive
    except OSError:
        pass  # no lock file: a run that died while starting
    shutil.rmtree(folder, ignore_errors=True)
    return True


def _finish(folder: Path, lock) -> None:
    lock.close()
    shutil.rmtree(folder, ignore_errors=True)


def use_run_folder() -> Path:
    """This process's run folder as Gradio's cache (``GRADIO_TEMP_DIR``), started on first use; call it before
    the app's components are made, which read the cache folder when they are."""
    current = os.environ.get("GRADIO_TEMP_DIR")
    if current and Path(current).name.startswith(f"run-{os.getpid()}-"):
        return Path(current)
    folder = start_run()
    os.environ["GRADIO_TEMP_DIR"] = str(folder)
    return folder


def sent_file(value: object, what: str, folder: Path | None = None) -> str:
    """The file a client's payload names (a FileData dict, or its path) if it lies in ``folder`` once resolved
    (default: Gradio's upload folder, which ``use_run_folder`` makes this run's folder). It is touched, so that it
    expires a while after its last use, not after its upload. Anything else is one ``InputError`` whatever the
    reason (no such file, a directory, a link or ``..`` leading out, a file elsewhere on the machine), so a client
    learns nothing of what exists."""
    upload_folder = os.environ.get("GRADIO_TEMP_DIR") or Path(tempfile.gettempdir()) / "gradio"
    named = value.get("path") if isinstance(value, dict) else value
    try:
        path = Path(os.path.realpath(named)) if isinstance(named, str) and named else None
        inside = path is not None and path.is_relative_to(Path(folder or upload_folder).resolve())
        found = inside and path.name != LOCK and path.is_file()
        if found:
            os.utime(path)
    except (OSError, ValueError):  # a NUL in the path, a file deleted meanwhile
        found = False
    if not found:
        raise InputError(NOT_SENT.format(what=what))
    return str(path)
