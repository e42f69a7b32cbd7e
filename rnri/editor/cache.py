"""What the editor keeps between requests: inversions per session (bounded in all and per client, least recently
used dropped) and the tickets that let only the last of a burst of live edits through."""

from __future__ import annotations

import itertools
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from rnri.api import Inversion
from rnri.core.counting import Measured
from rnri.core.settings import InversionSettings
from rnri.editor.uploads import MAX_SIDE, Photo, Source, load_photo

MAX_AUTO_MASKS = 8  # automatic masks kept per cached inversion (one per target prompt and guidance)


class BoundedDict(OrderedDict):
    """A dict that keeps only its ``capacity`` most recently written (or touched) entries; thread-safe writes."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        super().__init__()
        self.capacity = capacity
        self._lock = threading.Lock()

    def __setitem__(self, key: Any, value: Any) -> None:
        with self._lock:
            super().__setitem__(key, value)
            self.move_to_end(key)
            while len(self) > self.capacity:
                self.popitem(last=False)

    def touch(self, key: Any) -> Any:
        """The value of ``key`` (None if absent), now counted as the most recently used."""
        with self._lock:
            if key not in self:
                return None
            self.move_to_end(key)
            return self[key]


class CheckedUploads:
    """The photo each session last had checked, kept decoded (at most ``capacity`` sessions, the least recently used
    dropped): a live re-edit, made at every pause in typing, reads its upload once instead of decoding, converting
    and hashing it again. A file is the same while its path, size and modification time are; anything else (bytes,
    an image object, a file that changed or is gone) is loaded afresh, with the same checks."""

    def __init__(self, capacity: int = 16) -> None:
        self.kept = BoundedDict(capacity)

    @property
    def capacity(self) -> int:
        return self.kept.capacity

    def load(self, source: Source | None, session: str, max_side: int | None = MAX_SIDE) -> Photo:
        if not isinstance(source, str | Path):
            return load_photo(source, max_side)
        try:
            stat = os.stat(source)
        except OSError:
            return load_photo(source, max_side)  # says why in words
        seen = (str(source), stat.st_size, stat.st_mtime_ns, max_side)
        kept = self.kept.touch(session)
        if kept is not None and kept[0] == seen:
            return kept[1]
        photo = load_photo(source, max_side)
        self.kept[session] = (seen, photo)
        return photo


@dataclass(frozen=True)
class InversionKey:
    """What an inversion depends on, within one session."""

    session: str
    digest: str  # Photo.digest
    prompt: str  # the source prompt
    settings: InversionSettings  # with the guidance resolved and only the method's own options


@dataclass
class CachedInversion:
    """An inversion with its reconstruction, as the editor shows them."""

    inversion: Inversion
    reconstruction: Image.Image  # the source prompt's regeneration, at the photo's size
    psnr: float  # of the reconstruction against the photo, dB
    cost: Measured  # of the inversion
    reconstruction_cost: Measured
    notices: tuple[str, ...] = ()  # warnings raised while inverting (e.g. a truncated prompt)
    auto_masks: BoundedDict = field(default_factory=lambda: BoundedDict(MAX_AUTO_MASKS))  # (target, guidance) -> mask


class InversionCache:
    """A least-recently-used map from ``InversionKey`` to ``CachedInversion``, bounded in entries in all and per
    owner (the client behind a session, ``owner(session)``), so one client's many sessions push out only its own
    inversions, never every other session's; thread-safe."""

    def __init__(
        self, capacity: int = 16, per_owner: int | None = None, owner: Callable[[str], str] | None = None
    ) -> None:
        if capacity < 1 or (per_owner is not None and per_owner < 1):
            raise ValueError(f"capacity and per_owner must be at least 1, got {capacity} and {per_owner}")
        self.capacity, self.per_owner = capacity, per_owner or capacity
        self.owner = owner or (lambda session: session)
        self._entries: OrderedDict[InversionKey, CachedInversion] = OrderedDict()  # least recently used first
        self._lock = threading.Lock()

    def get(self, key: InversionKey) -> CachedInversion | None:
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
            return self._entries.get(key)

    def put(self, key: InversionKey, value: CachedInversion) -> None:
        with self._lock:
            self._entries.pop(key, None)
            mine = self.owner(key.session)
            same = [k for k in self._entries if self.owner(k.session) == mine]
            for old in same[: max(0, len(same) + 1 - self.per_owner)]:
                del self._entries[old]
            self._entries[key] = value
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


@dataclass
class LatestRequest:
    """Tickets per session, so that of a burst of requests only the last one goes on (debouncing)."""

    _tickets: BoundedDict = field(default_factory=lambda: BoundedDict(1024))  # the latest ticket of each session
    _numbers: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def issue(self, session: str) -> int:
        """A new ticket for ``session`` (unique across sessions); earlier ones of that session stop being latest."""
        ticket = next(self._numbers)
        self._tickets[session] = ticket
        return ticket

    def is_latest(self, session: str, ticket: int) -> bool:
        return self._tickets.get(session) == ticket
