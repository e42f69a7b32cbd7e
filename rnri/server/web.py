"""What the editor's web server refuses before any route sees a request, and who is still listening.

A plain ASGI middleware (no Gradio in it), in front of every route of the app, its framework's own included:

- **Host**: a server bound to this machine answers only requests addressed to this machine (``localhost``,
  ``127.0.0.1``, ``[::1]``); bound to a network, only requests addressed to it by an IP address or by a name of
  ``allowed_origins``. A web page that rebinds its own name to the server's address gets nothing (421).
- **Origin**: a request that changes something (any method but GET, HEAD and OPTIONS) from another site's page is
  refused; browsers send it, CORS only hides the answer. An origin passes when ``allowed_origins`` names it, or
  when it is the Host the request was sent to and that Host is an address or ``localhost`` (no page can rebind
  those); API clients (no ``Origin``) pass.
- **Body**: a body larger than ``max_body_bytes`` is refused (413) by its declared length or as it streams; a JSON
  body outside MCP larger than ``max_json_bytes`` (a request's data: prompts and file references), or nested or
  numerous beyond bounds (read in one linear pass, ``rnri.jsonshape``), is refused before anything parses it.
- **Jobs per client**: a client (its address) with ``max_jobs_per_client`` jobs waiting, running or on their way
  to the queue cannot send another (429), counted under a lock (``limits.JobSlots``).
- **Logins** (``--auth``): after ``max_failed_logins`` failures in a row a client waits ``login_lockout_s``;
  every MCP route asks for the login too.
- **Uploads**: at most ``max_files_per_upload`` files a request; a client's uploads on disk, and all clients',
  are bounded (``limits.UploadLedger``).
- **Names**: a call to an API name the app does not have is a 404, not a traceback.
- **Headers**: ``X-Content-Type-Options: nosniff``, ``Referrer-Policy: same-origin`` and ``frame-ancestors`` (the
  page may be framed only by ``frame_ancestors``: itself, and Hugging Face on a Space), on every answer, the
  guard's refusals included.

It also counts the open event streams per session (:class:`Listeners`): a job whose client never opened its stream,
or closed it, has nobody to show its result to, and the editor drops it before it runs. And it notes which client
each session belongs to, so the inversion cache can bound each client's share.

Why one module of ~540 lines: the guard is one ASGI middleware whose checks run in one order on every request
(host, origin, body size, jobs per client, headers); the counts it keeps are in :mod:`rnri.server.limits`.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import json
import os
import re
import secrets
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import parse_qs, urlsplit

from starlette.exceptions import HTTPException

from rnri.editor.uploads import MAX_PROMPT_CHARS
from rnri.jsonshape import json_shape
from rnri.server.limits import JobSlots, LoginThrottle, PartCounter, UploadLedger, UploadQuota

LOOPBACK = ("localhost", "127.0.0.1", "::1")
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
SPACE_FRAMERS = ("https://huggingface.co", "https://*.hf.space")  # where a Space's page is shown
JOB_ROUTES = re.compile(r"/(queue/join|call/(v2/)?[^/]+|run/[^/]+|api/[^/]+)/?$")  # POSTs that queue or run a job
NAMED_ROUTES = re.compile(r"/gradio_api/(call/(v2/)?|run/|api/)(?P<name>[^/]+)/?$")  # POSTs that name an endpoint
BY_INDEX = "predict"  # the name under which /run and /api take an fn_index instead
CALL_ROUTES = re.compile(r"/gradio_api/call/(v2/)?[^/]+/?$")  # POSTs answered with an event id to stream
STREAM_ROUTES = re.compile(r"/(queue/data|call/(v2/)?[^/]+/(?P<event>[^/]+))/?$")  # GETs that stream a result
LOGIN_ROUTES = re.compile(r"/login/?$")
UPLOAD_ROUTES = re.compile(r"/gradio_api/upload/?$")
MCP_ROUTES = re.compile(r"/gradio_api/mcp(/|$)")
SHAPE_IN_THREAD_BYTES = 2**20  # larger JSON bodies are measured off the event loop (about 30 ms a MiB)

Scope = Mapping[str, Any]
Send = Callable[[dict], Any]
Receive = Callable[[], Any]


@dataclass(frozen=True)
class WebPolicy:
    """What the server accepts; :func:`policy_for` picks it from where the server runs."""

    max_body_bytes: int
    allowed_hosts: tuple[str, ...] | None = LOOPBACK  # host names a request may address; None: any (a Space)
    any_address: bool = False  # also hosts that are IP addresses (bound to a network)
    allowed_origins: tuple[str, ...] = ()  # other sites whose pages may send requests (scheme://host[:port])
    frame_ancestors: tuple[str, ...] = ("'self'",)
    max_jobs_per_client: int = 4
    behind_proxy: bool = False  # a client is the last X-Forwarded-For address (a Space), not the socket's peer
    max_json_bytes: int = 256 * 2**10  # a JSON body outside MCP: a request's data (prompts, file references)
    max_json_depth: int = 32  # the page's deepest is 5 (an image editor's layers)
    max_json_values: int = 10_000  # the page's largest has a few dozen
    max_failed_logins: int = 5  # in a row, before a client is locked out ...
    login_lockout_s: float = 60.0  # ... for this long
    upload_quota_per_client: int = 128 * 2**20  # 4 photos of the largest size
    upload_quota: int = 2**30
    max_files_per_upload: int = 4


def policy_for(host: str, max_body_bytes: int, on_space: bool, allowed_origins: tuple[str, ...] = ()) -> WebPolicy:
    """The policy of a server bound to ``host``: loopback names only when it is bound to this machine; bound to a
    network, its addresses and the names of ``allowed_origins`` too; on a Space, any host (Hugging Face's proxy
    answers for it), framed by Hugging Face and its clients told apart by the proxy's header."""
    local = host in LOOPBACK
    named = tuple(name for name in (urlsplit(o).hostname for o in allowed_origins) if name)
    return WebPolicy(
        max_body_bytes=max_body_bytes,
        allowed_hosts=None if on_space else LOOPBACK + (() if local else named),
        any_address=not local,
        allowed_origins=allowed_origins,
        frame_ancestors=("'self'", *SPACE_FRAMERS) if on_space else ("'self'",),
        behind_proxy=on_space,
    )


def trust_forwarded_for(on_space: bool) -> None:
    """Let the web server (uvicorn) take a client's address from ``X-Forwarded-For`` only on a Space, whose proxy
    sets it. Off a Space uvicorn trusted it from any local client, so one client could claim any address and pass
    the limits per client; an operator behind a proxy of their own names it in ``FORWARDED_ALLOW_IPS``."""
    if not on_space:
        os.environ.setdefault("FORWARDED_ALLOW_IPS", "")


def client_of(headers: Mapping[str, str], peer: str | None, behind_proxy: bool) -> str:
    """Who a request comes from: the socket's peer, or behind a proxy the address it appended last."""
    if behind_proxy and headers.get("x-forwarded-for"):
        return headers["x-forwarded-for"].split(",")[-1].strip()
    return peer or "unknown"


class Listeners:
    """Per session, when it last queued a job, how many event streams it has open and which client it belongs to
    (thread-safe): whether anybody is still there to see a job's result, and whose share of the cache it uses."""

    def __init__(self, grace_s: float = 10.0, remembered: int = 4096) -> None:
        self.grace_s, self.remembered = grace_s, remembered  # how long a client may take to open its stream
        self._open: Counter[str] = Counter()
        self._joined: OrderedDict[str, float] = OrderedDict()
        self._owners: OrderedDict[str, str] = OrderedDict()  # session -> client
        self._events: OrderedDict[str, str] = OrderedDict()  # a /call job's event id -> its session
        self._changed = threading.Condition()

    def joined(self, session: str, client: str | None = None) -> None:
        """``session`` queued a job (from ``client``): its stream is expected within ``grace_s``."""
        with self._changed:
            _remember(self._joined, session, time.monotonic(), self.remembered)
            if client is not None:
                _remember(self._owners, session, client, self.remembered)

    def owned(self, session: str, client: str) -> None:
        with self._changed:
            _remember(self._owners, session, client, self.remembered)

    def streamed_as(self, event: str, session: str) -> None:
        """The stream of the /call job ``event`` is that of ``session`` (named in its post)."""
        with self._changed:
            _remember(self._events, event, session, self.remembered)

    def client(self, session: str) -> str:
        """The client ``session`` belongs to (the session itself when none is known)."""
        with self._changed:
            return self._owners.get(session, session)

    def session_of(self, event: str) -> str:
        with self._changed:
            return self._events.get(event, event)

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
        True for a session that never queued through ``/queue/join`` or ``/call`` (nothing known of it)."""
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


def _remember(found: OrderedDict, key: str, value: Any, most: int) -> None:
    found.pop(key, None)
    found[key] = value
    while len(found) > most:
        found.popitem(last=False)


class Refused(HTTPException):
    """Raised while a request's body streams in; an HTTPException, so a framework answers its status too."""


class BodyTooLarge(Refused):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"The request is larger than {limit:,} bytes.")


class WebGuard:
    """The ASGI middleware (see the module's docstring); ``queued(client)`` counts that client's jobs in the queue,
    ``endpoints()`` names the app's API endpoints (None: any name is passed on)."""

    def __init__(
        self,
        app: Any,
        policy: WebPolicy,
        listeners: Listeners,
        queued: Callable[[str], int],
        endpoints: Callable[[], Collection[str]] | None = None,
    ) -> None:
        self.app, self.policy, self.listeners, self.endpoints = app, policy, listeners, endpoints
        self.jobs = JobSlots(policy.max_jobs_per_client, queued)
        self.logins = LoginThrottle(policy.max_failed_logins, policy.login_lockout_s)
        self.uploads = UploadLedger(UploadQuota(policy.upload_quota_per_client, policy.upload_quota))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        client = client_of(headers, (scope.get("client") or (None,))[0], self.policy.behind_proxy)
        answer = Answer(send, self.security_headers())
        refusal = self.refusal(scope, headers, client)
        job = scope["method"] == "POST" and JOB_ROUTES.search(scope["path"]) is not None
        if refusal is None and job and not self.jobs.take(client):
            refusal = 429, f"{self.policy.max_jobs_per_client} requests of yours are waiting already; try again soon."
        if refusal:
            await answer.plain(*refusal)
            return
        try:
            await self.serve(scope, receive, answer, headers, client)
        except Refused as error:
            if not answer.started:
                await answer.plain(error.status_code, error.detail)
        finally:
            if job:
                self.jobs.give_back(client)

    async def serve(self, scope: Scope, receive: Receive, answer: Answer, headers: Mapping, client: str) -> None:
        """Pass the request on, reading what the guard must know first (a JSON body's shape and session) and after
        (a login's outcome, the files uploaded, a /call job's event)."""
        method, path, session = scope["method"], scope["path"], None
        upload = method == "POST" and UPLOAD_ROUTES.search(path) is not None
        boundary = _boundary(headers.get("content-type", "")) if upload else None
        receive = self.upload_stream(receive, boundary, answer) if boundary else self.bounded(receive)
        if method == "POST" and _is_json(headers.get("content-type")):
            body = await self.json_body(receive, path)
            receive, session = _replay(body, receive), _session_hash(body)
            if session and (path.rstrip("/").endswith("/queue/join") or CALL_ROUTES.search(path)):
                self.listeners.joined(session, client)
            elif session:
                self.listeners.owned(session, client)
        stream = STREAM_ROUTES.search(path) if method == "GET" else None
        listening = _stream_session(scope, stream, self.listeners) if stream else None
        sent = int(headers.get("content-length") or 0)
        answer.on_end = lambda: self.note_answer(method, path, answer, client, session, sent)  # before the client
        if listening:  # can read the answer and act on it (stream a /call job's event, say)
            with self.listeners.listening(listening):
                await self.app(scope, receive, answer)
        else:
            await self.app(scope, receive, answer)
        await answer.finish()

    def note_answer(self, method: str, path: str, answer: Answer, client: str, session: str | None, sent: int) -> None:
        if method != "POST":
            return
        if LOGIN_ROUTES.search(path) and answer.status in (400, 401):
            self.logins.failed(client)
        elif LOGIN_ROUTES.search(path) and answer.status == 200:
            self.logins.succeeded(client)
        elif UPLOAD_ROUTES.search(path) and answer.status == 200:
            paths = answer.json()
            self.uploads.add(client, [p for p in paths if isinstance(p, str)] if isinstance(paths, list) else [], sent)
        elif CALL_ROUTES.search(path) and answer.status == 200:
            event = (answer.json() or {}).get("event_id") if isinstance(answer.json(), dict) else None
            if isinstance(event, str) and session:
                self.listeners.streamed_as(event, session)
            elif isinstance(event, str):
                self.listeners.joined(event, client)  # Gradio's stream of a job named by no session: its event

    def refusal(self, scope: Scope, headers: Mapping[str, str], client: str) -> tuple[int, str] | None:
        """Why to refuse a request at once (status, message), or None."""
        policy, host, method, path = self.policy, _host_name(headers.get("host", "")), scope["method"], scope["path"]
        if not self.host_allowed(host):
            return 421, "This server answers only requests addressed to it by its address or an allowed name."
        origin = headers.get("origin")
        if method not in SAFE_METHODS and origin is not None and not self.same_site(origin, headers):
            return 403, "Requests from another site's page are refused."
        length = headers.get("content-length") or "0"
        if not length.isdigit():
            return 400, "The Content-Length header is not a number."
        if int(length) > policy.max_body_bytes:
            return 413, f"The request is larger than {policy.max_body_bytes:,} bytes."
        login = (method == "POST" and LOGIN_ROUTES.search(path)) or MCP_ROUTES.search(path)
        if login and (wait := self.logins.wait_s(client)):
            return 429, f"Too many failed logins from your address; try again in {wait:.0f} s."
        if MCP_ROUTES.search(path) and not (logged_in := _logged_in(scope, headers)):
            if logged_in is False:
                self.logins.failed(client)
            return 401, "Log in first: MCP clients send the user and password of --auth as HTTP Basic credentials."
        if method == "POST" and UPLOAD_ROUTES.search(path):
            return self.uploads.refusal(client, int(length))
        named = NAMED_ROUTES.search(path) if method == "POST" and self.endpoints is not None else None
        if named and named["name"] != BY_INDEX and named["name"] not in self.endpoints():
            return 404, f"No API endpoint is named {named['name']!r}."
        return None

    def host_allowed(self, host: str) -> bool:
        hosts = self.policy.allowed_hosts
        return hosts is None or host in hosts or (self.policy.any_address and _is_address(host))

    def same_site(self, origin: str, headers: Mapping[str, str]) -> bool:
        """Whether a page of ``origin`` may change things here: ``allowed_origins`` names it, or it is the Host the
        request was sent to and no page could have rebound that Host (an address, ``localhost``; on a Space, any)."""
        if origin in self.policy.allowed_origins:
            return True
        parts = urlsplit(origin)
        if parts.netloc != headers.get("host"):
            return False
        name = parts.hostname or ""
        return self.policy.allowed_hosts is None or name in LOOPBACK or _is_address(name)

    async def json_body(self, receive: Receive, path: str) -> bytes:
        """The whole JSON body, refused (413) when larger, deeper or more numerous than the policy allows, before
        anything parses it."""
        policy, chunks, size, more = self.policy, [], 0, True
        limit = policy.max_body_bytes if MCP_ROUTES.search(path) else policy.max_json_bytes
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            size, more = size + len(chunks[-1]), message.get("more_body", False)
            if size > limit:
                raise Refused(
                    413,
                    f"The request's data is over the {limit:,} bytes a request may send: prompts are read up to "
                    f"{MAX_PROMPT_CHARS:,} characters, and photos are sent by /gradio_api/upload.",
                )
        body = b"".join(chunks)
        shape = await asyncio.to_thread(json_shape, body) if size > SHAPE_IN_THREAD_BYTES else json_shape(body)
        if shape.depth > policy.max_json_depth:
            raise Refused(
                413, f"The request's data is nested {shape.depth:,} levels deep, over {policy.max_json_depth}."
            )
        if shape.values > policy.max_json_values:
            raise Refused(413, f"The request's data holds {shape.values:,} values, over {policy.max_json_values:,}.")
        return body

    def upload_stream(self, receive: Receive, boundary: bytes, answer: Answer) -> Receive:
        """``receive`` for a multipart upload that stops at the first part over ``max_files_per_upload`` or the first
        byte over ``max_body_bytes``. It stops by ending the body with a part the parser cannot read, so that
        Gradio's parser deletes every file it wrote (an exception would leave them on disk), and the answer is
        this guard's (413)."""
        most, limit = self.policy.max_files_per_upload, self.policy.max_body_bytes
        counter, seen = PartCounter(boundary), 0
        unreadable = b"\x01\r\n--" + boundary + b"\r\n\x01\r\n\r\n"  # invalid in a header, wherever it lands

        async def counted() -> dict:
            nonlocal seen
            if answer.replacement:
                return {"type": "http.request", "body": b"", "more_body": False}
            message = await receive()
            chunk = message.get("body", b"")
            seen += len(chunk)
            if counter.feed(chunk) > most or seen > limit:
                over = f"At most {most} files" if counter.parts > most else f"No more than {limit:,} bytes"
                answer.replace(413, f"{over} may be sent in one request.")
                return {"type": "http.request", "body": unreadable, "more_body": False}
            return message

        return counted

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


class Answer:
    """``send`` with the security headers added to every answer, noting its status and (short) body; an answer the
    guard ``replace``s is swallowed and the guard's sent instead (``finish``)."""

    KEPT_BYTES = 64 * 2**10  # an upload's list of paths, a /call's event id: the guard reads nothing longer

    def __init__(self, send: Send, headers: list[tuple[bytes, bytes]]) -> None:
        self.send, self.headers, self.status, self.body = send, headers, None, b""
        self.started, self.replacement = False, None  # whether an answer went out; the guard's, if it replaced it
        self.on_end: Callable[[], None] | None = None  # called once the app's answer is whole, before it goes out

    def replace(self, status: int, message: str) -> None:
        self.replacement = status, message

    async def __call__(self, message: dict) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        elif message["type"] == "http.response.body" and len(self.body) <= self.KEPT_BYTES:
            self.body += message.get("body", b"")
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            self.ended()
        if self.replacement is None:
            await self.forward(message)

    def ended(self) -> None:
        on_end, self.on_end = self.on_end, None
        if on_end is not None:
            on_end()

    async def forward(self, message: dict) -> None:
        if message["type"] == "http.response.start":
            self.started = True
            message = {**message, "headers": [*message.get("headers", []), *self.headers]}
        await self.send(message)

    async def finish(self) -> None:
        self.ended()
        if self.replacement and not self.started:
            await self.plain(*self.replacement)

    def json(self) -> Any:
        try:
            return json.loads(self.body) if len(self.body) <= self.KEPT_BYTES else None
        except ValueError:
            return None

    async def plain(self, status: int, message: str) -> None:
        body = message.encode()
        headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode())]
        await self.forward({"type": "http.response.start", "status": status, "headers": headers})
        await self.forward({"type": "http.response.body", "body": body})


def _host_name(host: str) -> str:
    """The name in a Host header, without its port: ``[::1]:7860`` -> ``::1``."""
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _is_json(content_type: str | None) -> bool:
    """Whether a framework reads the body as JSON (FastAPI also does without a content type)."""
    kind = (content_type or "").split(";", 1)[0].strip().lower()
    return not kind or kind == "application/json" or (kind.startswith("application/") and kind.endswith("+json"))


def _boundary(content_type: str) -> bytes | None:
    for piece in content_type.split(";")[1:]:
        key, _, value = piece.strip().partition("=")
        if key.lower() == "boundary" and value:
            return value.strip('"').encode("latin-1")
    return None


def _session_hash(body: bytes) -> str | None:
    """The ``session_hash`` a (small, already measured) JSON body names, if any."""
    try:
        found = json.loads(body)
    except ValueError:
        return None  # the route answers a malformed body itself
    session = found.get("session_hash") if isinstance(found, dict) else None
    return session if isinstance(session, str) else None


def _replay(body: bytes, receive: Receive) -> Receive:
    """``receive`` that gives ``body`` once, whole, then whatever comes next (a disconnect)."""
    replayed = False

    async def replay() -> dict:
        nonlocal replayed
        if replayed:
            return await receive()
        replayed = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


def _stream_session(scope: Scope, stream: re.Match, listeners: Listeners) -> str | None:
    """The session a stream serves: ``session_hash`` of /queue/data, or that of the /call job whose event it
    streams (the event's own id unless its client named a session)."""
    if stream.group("event"):
        return listeners.session_of(stream.group("event"))
    found = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("session_hash")
    return found[0] if found else None


def _logged_in(scope: Scope, headers: Mapping[str, str]) -> bool | None:
    """Whether a request carries a login of the app's (``--auth``): the cookie of the login page, or HTTP Basic
    credentials (a fixed header an MCP client can send); None when it carries none, False when its credentials are
    wrong. Gradio's app (``scope["app"]``) keeps ``auth`` (user -> password; None: nobody is asked), the tokens it
    handed out at login, and the cookies they come back in."""
    app = scope.get("app")
    users = getattr(app, "auth", None)
    if users is None:
        return True
    kind, _, credentials = headers.get("authorization", "").partition(" ")
    if kind.lower() == "basic":
        try:
            user, _, password = base64.b64decode(credentials, validate=True).decode().partition(":")
        except ValueError:  # not base64, not UTF-8
            return False
        known = users.get(user) if isinstance(users, dict) else None
        return known is not None and secrets.compare_digest(password.encode(), str(known).encode())
    try:
        cookies = SimpleCookie(headers.get("cookie", ""))
    except CookieError:
        return None
    names = [f"access-token{secure}-{getattr(app, 'cookie_id', '')}" for secure in ("", "-unsecure")]
    return any(name in cookies and cookies[name].value in getattr(app, "tokens", {}) for name in names) or None
