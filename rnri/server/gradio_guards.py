"""Guards on Gradio's own internals that a request reaches (Gradio 6.31): the image editor's blob route, the count
of a client's queued jobs, and the MCP tool's client under a login. Each reads a private attribute of Gradio's,
named in tests/test_layers.py with the reason; tests/test_hardening.py fails if Gradio changes under them."""

from __future__ import annotations

import gradio as gr
from fastapi import HTTPException
from gradio.components.base import server
from gradio.components.image_editor import AcceptBlobs, EditorData
from gradio_client import Client

import rnri.editor as ed
import rnri.server as srv
from rnri.server.handlers import MAX_EDITOR_PIXELS, user_errors


class PainterGuard:
    """Bounds on what a request can make the image editor hold (Gradio 6.31 has none), installed on the instance
    (a subclass of a Gradio component would make Gradio write an ``app.pyi`` beside this file at every start).

    Its ``accept_blobs`` route stores a stroke's uploads until the change event reads them: as sent, an ``index``
    of 10**9 grows a list of 10**9 entries (8 GB) and ids never read pile up. Here a blob must be an image of at
    most ``MAX_EDITOR_PIXELS`` (checked from its header), a layer index under ``ed.MAX_LAYERS``, and at most
    ``MAX_PENDING`` strokes (``MAX_PENDING_BYTES`` in all) wait to be read, the oldest dropped first. A value
    naming files instead is checked the same way before Gradio decodes them.
    """

    MAX_PENDING, MAX_PENDING_BYTES = 32, 128 * 2**20

    def __init__(self, painter: gr.ImageEditor) -> None:
        self.painter, self.accept, self.decode = painter, painter.accept_blobs, painter.preprocess

        def accept_blobs(data: AcceptBlobs):  # a function: the route asks it to be marked as a server function
            return self.accept_blobs(data)

        painter.accept_blobs, painter.preprocess = server(accept_blobs), self.preprocess

    def accept_blobs(self, data: AcceptBlobs):
        kind, index, ident = data.data.get("type"), data.data.get("index"), data.data.get("id")
        if kind not in ("background", "layer", "composite") or not isinstance(ident, str) or len(ident) > 64:
            raise HTTPException(400, "Not a blob of the image editor.")
        if kind == "layer" and not (str(index).isdigit() and int(index) < ed.MAX_LAYERS):
            raise HTTPException(400, f"A layer index must be under {ed.MAX_LAYERS}.")
        if len(data.files) != 1:
            raise HTTPException(400, "Send one image per blob.")
        try:
            ed.image_size(data.files[0][1], "painted layer", MAX_EDITOR_PIXELS)
        except ed.InputError as error:
            raise HTTPException(400, str(error)) from None
        self.accept(data)
        self.bound_pending()

    def bound_pending(self) -> None:
        """Drop the oldest strokes waiting to be read beyond ``MAX_PENDING`` of them or ``MAX_PENDING_BYTES``."""
        pending = self.painter.blob_storage

        def size(blobs) -> int:
            return sum(len(b or b"") for b in (blobs.background, blobs.composite, *blobs.layers))

        while len(pending) > self.MAX_PENDING or (
            len(pending) > 1 and sum(map(size, pending.values())) > self.MAX_PENDING_BYTES
        ):
            pending.pop(next(iter(pending)))

    def preprocess(self, payload: EditorData | None):
        if payload is not None and payload.id is None:  # files named by path: not yet checked
            if len(payload.layers) > ed.MAX_LAYERS:
                raise gr.Error(f"{len(payload.layers)} painted layers were sent; at most {ed.MAX_LAYERS} are read.")
            for file in (payload.background, payload.composite, *payload.layers):
                with user_errors():
                    if file is not None:
                        ed.image_size(file.path, "painted layer", MAX_EDITOR_PIXELS)
        return self.decode(payload)


def queued_jobs(demo: gr.Blocks, policy: srv.WebPolicy):
    """How many edits (jobs for the model) a client has waiting or running in ``demo``'s queue."""

    def count(client: str) -> int:
        queue = demo._queue  # Gradio keeps no count per client; its events say who sent them
        waiting = [event for line in queue.event_queue_per_concurrency_id.values() for event in line.queue]
        running = [event for jobs in queue.active_jobs if jobs for event in jobs]
        return sum(
            event.concurrency_id == "gpu" and event.request is not None and client == srv.client_of(
                event.request.headers, event.request.client.host if event.request.client else None,
                policy.behind_proxy,
            )
            for event in waiting + running
        )  # fmt: skip

    return count


def mcp_logs_in(demo: gr.Blocks, url: str, auth: tuple[str, str]) -> None:
    """Gradio 6.31's MCP tool calls go back into the app through a gradio_client of its own, made without the login:
    under --auth every call failed ("credentials were not provided"). Here that client is made, logged in."""
    demo.mcp_server_obj._client_instance = Client(
        url, auth=auth, download_files=False, verbose=False, analytics_enabled=False, ssl_verify=False,
        _skip_components=False, headers={"x-gradio-user": "mcp"},
    )  # fmt: skip
