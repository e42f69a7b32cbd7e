"""What the web guard counts per client, each behind its own lock (requests arrive on one event loop, but the
counts are read from the queue's and the handlers' threads too): jobs being admitted, failed logins, and the
uploads a client keeps on the server's disk."""

from __future__ import annotations

import os
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass


class JobSlots:
    """Admission of a client's jobs: its jobs in the queue (``queued(client)``, Gradio's count) plus the posts of
    its that are on their way there (admitted, not yet queued: a body being read and parsed) stay under ``limit``.
    Counting only the queue let 16 posts that arrived together all in."""

    def __init__(self, limit: int, queued: Callable[[str], int]) -> None:
        self.limit, self.queued = limit, queued
        self._arriving: Counter[str] = Counter()
        self._lock = threading.Lock()

    def take(self, client: str) -> bool:
        """Whether ``client`` may send one more job; if so it is counted until ``give_back``."""
        with self._lock:
            if self.queued(client) + self._arriving[client] >= self.limit:
                return False
            self._arriving[client] += 1
            return True

    def give_back(self, client: str) -> None:
        """The post has been answered: its job is in the queue (counted there) or was refused."""
        with self._lock:
            self._arriving[client] -= 1
            if self._arriving[client] <= 0:
                del self._arriving[client]

    @contextmanager
    def held(self, client: str) -> Iterator[None]:
        try:
            yield
        finally:
            self.give_back(client)


class LoginThrottle:
    """Failed logins per client: after ``limit`` in a row, the client waits ``lockout_s`` before the next try (the
    right password included); a success clears its count. A guessing client gets ``limit`` tries a lockout instead
    of 300 in 0.7 s, and a user who mistyped is let in again once it ends."""

    def __init__(self, limit: int, lockout_s: float, remembered: int = 65536) -> None:
        self.limit, self.lockout_s, self.remembered = limit, lockout_s, remembered
        self._failures: OrderedDict[str, tuple[int, float]] = OrderedDict()  # client -> (failures, locked until)
        self._lock = threading.Lock()

    def wait_s(self, client: str) -> float:
        """How long ``client`` must wait before it may try again (0: it may now)."""
        with self._lock:
            _, until = self._failures.get(client, (0, 0.0))
            return max(0.0, until - time.monotonic())

    def failed(self, client: str) -> None:
        with self._lock:
            failures, _ = self._failures.pop(client, (0, 0.0))
            failures += 1
            until = time.monotonic() + self.lockout_s if failures >= self.limit else 0.0
            self._failures[client] = (0 if until else failures, until)
            while len(self._failures) > self.remembered:
                self._failures.popitem(last=False)

    def succeeded(self, client: str) -> None:
        with self._lock:
            self._failures.pop(client, None)


@dataclass(frozen=True)
class UploadQuota:
    """What uploads may take on the server's disk; they are deleted a while after their last use (the app's
    ``delete_cache``) and at exit, and then no longer count."""

    per_client: int  # bytes one client's uploads may take
    total: int  # bytes all uploads together may take
    files_per_client: int = 64  # however small they are
    files: int = 4096  # all clients' together


class UploadLedger:
    """The uploads each client keeps (path and size), forgotten once deleted; thread-safe."""

    def __init__(self, quota: UploadQuota) -> None:
        self.quota = quota
        self._files: dict[str, dict[str, int]] = {}  # client -> path -> bytes
        self._lock = threading.Lock()

    def refusal(self, client: str, incoming: int) -> tuple[int, str] | None:
        """Why ``client`` may not upload ``incoming`` more bytes now (status, message), or None."""
        with self._lock:
            self._forget_deleted()
            mine = self._files.get(client, {})
            total = sum(sum(files.values()) for files in self._files.values())
            count = sum(len(files) for files in self._files.values())
        mb = 2**20
        if sum(mine.values()) + incoming > self.quota.per_client or len(mine) >= self.quota.files_per_client:
            return 429, (
                f"Your uploads take {sum(mine.values()) / mb:.0f} MB in {len(mine)} files; an address may keep "
                f"{self.quota.per_client / mb:.0f} MB in {self.quota.files_per_client} files. They are deleted "
                "a while after their last use; try again then."
            )
        if total + incoming > self.quota.total or count >= self.quota.files:
            return 507, "The server's space for uploads is full; try again in a few minutes."
        return None

    def add(self, client: str, paths: list[str], sent: int = 0) -> None:
        """``client`` uploaded ``paths`` in a request of ``sent`` bytes (their size while Gradio still copies them,
        which it does in the background when its folder is on another disk than the temp folder)."""
        with self._lock:
            mine = self._files.setdefault(client, {})
            for path in paths:
                try:
                    mine[path] = os.stat(path).st_size
                except OSError:
                    mine[path] = sent // max(1, len(paths))

    def _forget_deleted(self) -> None:
        for client, files in list(self._files.items()):
            for path in [p for p in files if not os.path.exists(p)]:
                del files[path]
            if not files:
                del self._files[client]


class PartCounter:
    """Counts the parts of a multipart body as it streams, so that a request of too many files is stopped before
    the framework's parser writes the one over the limit (Gradio's allows 1,000)."""

    def __init__(self, boundary: bytes) -> None:
        self.marker, self.parts, self._pending = b"--" + boundary, 0, b""

    def feed(self, chunk: bytes) -> int:
        """The parts begun so far, ``chunk`` included (a delimiter followed by ``--`` closes the body)."""
        data, at, keep = self._pending + chunk, 0, 0
        while True:
            found = data.find(self.marker, at)
            if found == -1:
                keep = max(at, len(data) - len(self.marker) - 1)  # a delimiter split across chunks comes back
                break
            end = found + len(self.marker)
            if end + 2 > len(data):
                keep = found  # opening or closing: told by the next bytes
                break
            self.parts += data[end : end + 2] != b"--"
            at = end
        self._pending = data[keep:]
        return self.parts
