"""How a front end sets up its process: rnri's log lines at the level a person chose (``--log-level``) and CPU threads
that wait without spinning. (Library notices that are not the user's business are kept out where they arise: the
package's ``__init__`` and ``rnri.editor.models.quiet_hub``.)"""

from __future__ import annotations

import logging
import os

LEVELS = ("debug", "info", "warning", "error")


def configure_logging(level: str = "warning") -> None:
    """Send rnri's log lines to stderr at ``level`` (one of ``LEVELS``)."""
    if level not in LEVELS:
        raise ValueError(f"the log level must be one of {', '.join(LEVELS)}, got {level!r}")
    logger = logging.getLogger("rnri")
    if not any(getattr(h, "rnri", False) for h in logger.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
        handler.rnri = True  # ours: configuring twice (tests, reloads) adds no second handler
        logger.addHandler(handler)
    logger.setLevel(level.upper())
    logger.propagate = False


def share_cpu_politely() -> None:
    """Let idle OpenMP threads sleep instead of spinning (``OMP_WAIT_POLICY=PASSIVE``) unless the environment says
    otherwise; effective only before torch is first imported.

    On a machine other processes also use, spinning threads fight them for the cores: an edit on the tiny model took
    17 to 44 s with torch's default and 0.5 to 3 s with passive waiting, on the same loaded 2-core machine
    (docs/app.md, "Where a first edit's time goes").
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
