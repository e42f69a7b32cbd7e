"""What the editor's web server refuses before any route sees a request, and who is still listening.

A plain ASGI middleware (no Gradio in it), in front of every route of the app, its framework's own included:

- **Host**: a server bound to this machine answers only requests addressed to this machine (``localhost``,
  ``127.0.0.1``, ``[::1]``), so a web page cannot reach it by rebinding its own name to 127.0.0.1.
- **Origin**: a request that changes something (any method but GET, HEAD and OPTIONS) from another site's page is
  refused; browsers send it, CORS only hides the answer. Same-origin pages, API clients (no ``Origin``) and the
  origins named in ``allowed_origins`` pass.
- **Body size**: a body larger than ``max_body_bytes`` is refused (413), by its declared length or as it streams,
  before a form parser holds it in memory.
- **Queued jobs per client**: a client (its address) with ``max_jobs_per_client`` jobs waiting or running cannot
  queue another (429), so one client cannot take every place in the queue.
- **Headers**: ``X-Content-Type-Options: nosniff``, ``Referrer-Policy: same-origin`` and ``frame-ancestors`` (the
  page may be framed only by ``frame_ancestors``: itself, and Hugging Face on a Space).

It also counts the open event streams per session (:class:`Listeners`): a job whose client never opened its stream,
or closed it, has nobody to show its result to, and the editor drops it before it runs.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

from starlette.exceptions import HTTPException

LOOPBACK = ("localhost", "127.0.0.1", "::1")
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
SPACE_FRAMERS = ("https://huggingface.co", "https://*.hf.space")  # where a Space's page is shown
JOB_ROUTES = re.compile(r"/(queue/join|call/[^/]+|run/[^/]+)/?$")  # POSTs that queue a job
STREAM_ROUTES = re.compile(r"/(queue/data|call/[^/]+/(?P<event>[^/]+))/?$")  # GETs that stream a job's result

Scope = Mapping[str, Any]
Send = Callable[[dict], Any]
Receive = Callable[[], Any]


@dataclass(frozen=True)
class WebPolicy:
    """What the server accepts; :func:`policy_for` picks it from where the server runs."""

    max_body_bytes: int
    allowed_hosts: tuple[str, ...] | None = LOOPBACK  # host names a request may address; None: any
    allowed_origins: tuple[str, ...] = ()  # other sites whose pages may send requests (scheme://host[:port])
    frame_ancestors: tuple[str, ...] = ("'self'",)
    max_jobs_per_client: int = 4
    behind_proxy: bool = False  # a client is the last X-Forwarded-For address (a Space), not the socket's peer


def policy_for(host: str, max_body_bytes: int, on_space: bool, allowed_origins: tuple[str, ...] = ()) -> WebPolicy:
    """The policy of a server bound to ``host``: loopback names only when it is bound to this machine; on a
    Space, framed by Hugging Face and its clients told apart by the proxy's header."""
    local = host in LOOPBACK
    return WebPolicy(
        max_body_bytes=max_body_bytes,
        allowed_hosts=LOOPBACK if local else None,
        allowed_origins=allowed_origins,
        frame_ancestors=("'self'", *SPACE_FRAMERS) if on_space else ("'self'",),
        behind_proxy=on_space,
    )


def client_of(headers: Mapping[str, str], peer: str | None, behind_proxy: bool) -> str:
    """Who a request comes from: the socket's peer, or behind a proxy the address it appended last."""
    if behind_proxy and headers.get("x-forwarded-for"):
        return headers["x-forwarded-for"].split(",")[-1].strip()
    return peer or "unknown"


class Listeners:
    """Per session, when it last queued a job and how many event streams it has open (thread-safe): whether
    anybody is still there to see a job's result."""

    def __init__(self, grace_s: float = 10.0, remembered: int = 4096) -> None:
        self.grace_s, self.remembered = grace_s, remembered  # how long a client may take to open its stream
        self._open: Counter[str] = Counter()
        self._joined: dict[str, float] = {}
        self._changed = threading.Condition()

    def joined(self, session: str) -> None:
        with self._changed:
            self._joined.pop(session, None)
            self._joined[session] = time.monotonic()
            while len(self._joined) > self.remembered:
                del self._joined[next(iter(self._joined))]

    @contextmanager
    def listening(self, session: str) -> Iterator[None]:
        with self._changed:
            self._open[session] += 1
            self._changed.notify_all()
        try:
            yield
        finally:
            with self._changed:
                self._open[session] -= 1
                if self._open[session] <= 0:
                    del self._open[session]

    def present(self, session: str) -> bool:
        """Whether ``session`` has a stream open, waiting for one until ``grace_s`` after it queued its last job;
        True for a session that never queued through ``/queue/join`` (nothing known of it)."""
        with self._changed:
            if session not in self._joined:
                return True
            deadline = self._joined[session] + self.grace_s
            while not self._open.get(session):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
            return True


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` mid-body; an HTTPException, so the framework answers 413 rather than 'bad body'."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"The request is larger than {limit:,} bytes.")


class WebGuard:
    """The ASGI middleware (see the module's docstring); ``queued(client)`` counts that client's jobs."""

    def __init__(self, app: Any, policy: WebPolicy, listeners: Listeners, queued: Callable[[str], int]) -> None:
        self.app, self.policy, self.listeners, self.queued = app, policy, listeners, queued

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        refusal = self.refusal(scope, headers)
        if refusal:
            await _answer(send, *refusal)
            return
        stream = STREAM_ROUTES.search(scope["path"]) if scope["method"] == "GET" else None
        session = _session(scope, stream) if stream else None
        started = False

        async def send_with_headers(message: dict) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = [*message.get("headers", []), *self.security_headers()]
            await send(message)

        try:
            if scope["method"] == "POST" and scope["path"].rstrip("/").endswith("/queue/join"):
                receive = await self.note_join(receive)
            if session:
                with self.listeners.listening(session):
                    await self.app(scope, self.bounded(receive), send_with_headers)
            else:
                await self.app(scope, self.bounded(receive), send_with_headers)
        except BodyTooLarge as error:
            if not started:
                await _answer(send, 413, error.detail)

    def refusal(self, scope: Scope, headers: Mapping[str, str]) -> tuple[int, str] | None:
        """Why to refuse a request at once (status, message), or None."""
        policy, host = self.policy, _host_name(headers.get("host", ""))
        if policy.allowed_hosts is not None and host not in policy.allowed_hosts:
            return 421, "This server answers only requests addressed to this machine (localhost)."
        origin = headers.get("origin")
        if scope["method"] not in SAFE_METHODS and origin is not None and not self.same_site(origin, headers):
            return 403, "Requests from another site's page are refused."
        length = headers.get("content-length") or "0"
        if not length.isdigit():
            return 400, "The Content-Length header is not a number."
        if int(length) > policy.max_body_bytes:
            return 413, f"The request is larger than {policy.max_body_bytes:,} bytes."
        if scope["method"] == "POST" and JOB_ROUTES.search(scope["path"]):
            client = client_of(headers, (scope.get("client") or (None,))[0], policy.behind_proxy)
            if self.queued(client) >= policy.max_jobs_per_client:
                return 429, f"{policy.max_jobs_per_client} requests of yours are waiting already; try again soon."
        return None

    async def note_join(self, receive: Receive) -> Receive:
        """Read a join's (small) body for its session, note when it joined, and hand the body on unchanged."""
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.policy.max_body_bytes:
                raise BodyTooLarge(self.policy.max_body_bytes)
        try:
            session = json.loads(body).get("session_hash")
        except (ValueError, AttributeError):
            session = None  # the route answers a malformed body itself
        if isinstance(session, str):
            self.listeners.joined(session)
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        return replay

    def same_site(self, origin: str, headers: Mapping[str, str]) -> bool:
        return urlsplit(origin).netloc == headers.get("host") or origin in self.policy.allowed_origins

    def bounded(self, receive: Receive) -> Receive:
        """``receive`` that raises ``BodyTooLarge`` once the body streamed passes the limit."""
        seen = 0

        async def counted() -> dict:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.policy.max_body_bytes:
                raise BodyTooLarge(self.policy.max_body_bytes)
            return message

        return counted

    def security_headers(self) -> list[tuple[bytes, bytes]]:
        found = {
            "x-content-type-options": "nosniff",
            "referrer-policy": "same-origin",
            "content-security-policy": "frame-ancestors " + " ".join(self.policy.frame_ancestors),
        }
        if self.policy.frame_ancestors == ("'self'",):
            found["x-frame-options"] = "SAMEORIGIN"
        return [(k.encode(), v.encode()) for k, v in found.items()]


def _host_name(host: str) -> str:
    """The name in a Host header, without its port: ``[::1]:7860`` -> ``::1``."""
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _session(scope: Scope, stream: re.Match) -> str | None:
    """The session a stream serves: ``session_hash`` of /queue/data, or the event of /call/<name>/<event> (whose
    session is the event's own id unless its client named one)."""
    if stream.group("event"):
        return stream.group("event")
    found = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("session_hash")
    return found[0] if found else None


async def _answer(send: Send, status: int, message: str) -> None:
    body = message.encode()
    headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
