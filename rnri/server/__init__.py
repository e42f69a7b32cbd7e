"""The web server around the editor (docs/architecture.md, "Layers"): Gradio's routes and their guards, per-client
limits, and the run's scratch folder. The page itself is app.py; the edit it runs is :mod:`rnri.editor`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rnri.core.lazy import attach

_WHERE = {
    "sent_file": "rnri.server.scratch",
    "use_run_folder": "rnri.server.scratch",
    "LOOPBACK": "rnri.server.web",
    "Listeners": "rnri.server.web",
    "WebGuard": "rnri.server.web",
    "WebPolicy": "rnri.server.web",
    "client_of": "rnri.server.web",
    "policy_for": "rnri.server.web",
    "trust_forwarded_for": "rnri.server.web",
}
__all__ = [
    "LOOPBACK",
    "Listeners",
    "WebGuard",
    "WebPolicy",
    "client_of",
    "policy_for",
    "sent_file",
    "trust_forwarded_for",
    "use_run_folder",
]

if TYPE_CHECKING:
    from rnri.server.scratch import sent_file, use_run_folder
    from rnri.server.web import LOOPBACK, Listeners, WebGuard, WebPolicy, client_of, policy_for, trust_forwarded_for

__getattr__, __dir__ = attach(__name__, _WHERE)
