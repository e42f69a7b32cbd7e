"""Serving the page: bound to this machine unless told otherwise, no share link, bounded uploads and sessions, and
the web guard (:mod:`rnri.server.web`) in front of every route; the login read from ``user:password``."""

from __future__ import annotations

import os
from typing import Any

import gradio as gr
from starlette.middleware import Middleware

import rnri.server as srv
from rnri.server.gradio_guards import mcp_logs_in, queued_jobs
from rnri.server.style import CSS

HOST = "127.0.0.1"  # this machine only; --host 0.0.0.0 (or GRADIO_SERVER_NAME) serves a network

MAX_FILE_SIZE = "30mb"  # uploads above this are refused by the server before anything is decoded

MAX_BODY_BYTES = 31 * 2**20  # any request body: one such file and its form fields

SESSIONS = 256  # sessions whose state Gradio keeps (a painted mask of up to 4 MB, the inputs), the oldest dropped


def launch(demo: gr.Blocks, host: str = HOST, port: int | None = None, block: bool = True, **options: Any) -> str:
    """Serve the editor: no share link, bounded uploads, the web guard in front of every route (``srv.WebGuard``:
    host, origin, body size, jobs per client, security headers); says where in one line (Gradio's own start-up
    lines, with their share-link hint, are off). Errors outside the handlers (Gradio's own: an API call missing an
    argument) reach the client in words; the handlers' own are ``gr.Error`` already. ``options`` go to Gradio's
    ``launch`` (``auth``, say)."""
    origins = tuple(o.strip() for o in options.pop("allowed_origins", "").split(",") if o.strip())
    on_space = bool(os.environ.get("SPACE_ID"))
    policy = srv.policy_for(host, MAX_BODY_BYTES, on_space=on_space, allowed_origins=origins)
    srv.trust_forwarded_for(on_space)
    gr.mcp.DEFAULT_TEMP_DIR = os.environ.get("GRADIO_TEMP_DIR", gr.mcp.DEFAULT_TEMP_DIR)  # base64 files: the run's
    listeners = getattr(demo, "rnri_listeners", None) or srv.Listeners()
    endpoints = lambda: {fn.api_name for fn in demo.fns.values()}  # noqa: E731  (read at each call: a reload)
    guard = Middleware(srv.WebGuard, policy=policy, listeners=listeners, queued=queued_jobs(demo, policy),
                       endpoints=endpoints)  # fmt: skip
    _, url, _ = demo.launch(
        server_name=host, server_port=port, share=False, max_file_size=MAX_FILE_SIZE, css=CSS,
        quiet=True, prevent_thread_lock=True, app_kwargs={"middleware": [guard]}, show_error=True,
        state_session_capacity=SESSIONS, **options,
    )  # fmt: skip
    if options.get("mcp_server") and options.get("auth"):
        mcp_logs_in(demo, url, options["auth"])
    scope = "this machine only" if host in srv.LOOPBACK else f"the network ({host})"
    access = "password required" if options.get("auth") else "no password"
    print(f"rnri editor at {url} ({scope}; {access}; no share link)", flush=True)
    if block:
        demo.block_thread()
    return url


def auth_of(value: str | None) -> tuple[str, str] | None:
    """``user:password`` as Gradio's ``auth``; None without one."""
    if not value:
        return None
    user, colon, password = value.partition(":")
    if not (user and colon and password):
        raise SystemExit("--auth (or RNRI_AUTH) must be user:password, both non-empty.")
    return user, password
