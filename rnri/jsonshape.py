"""How deep JSON text nests and about how many values it holds, read in one linear pass without parsing it.

Parsing is what a hostile document costs (9M ``{}`` become 2 GB of Python objects; 100,000 ``[`` overflow the
recursion limit), so its shape is read first. Strings are removed by one regular expression that cannot backtrack
(possessive repeats, and an unterminated string runs to the end instead of being tried again from each later
quote, which made ``"`` + ``\\"`` x n quadratic), then the brackets and commas left are counted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+(?:"|\\?\Z)', re.DOTALL)  # a string, or an unterminated one to the end
STRUCTURE = bytes(range(256)).translate(None, b"[]{},")  # every byte but these is deleted after the strings
STEPS = bytes.maketrans(b"[{]},", b"\x02\x02\x00\x00\x01")  # each one's step in depth, + 1
CHUNK = 1 << 22  # brackets summed at a time: the running depth of a 31 MiB body never needs 124 MB


@dataclass(frozen=True)
class JsonShape:
    depth: int  # how deep arrays and objects nest (0: a bare string or number)
    values: int  # arrays, objects and commas: about how many values parsing would make


def json_shape(text: str | bytes) -> JsonShape:
    """The shape of JSON ``text`` (valid or not), in time linear in its length."""
    data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    structure = STRING.sub(b"", data).translate(None, STRUCTURE)
    opens = structure.count(b"[") + structure.count(b"{")
    return JsonShape(_depth(structure), opens + structure.count(b","))


def _depth(brackets: bytes) -> int:
    """The deepest running count of open brackets in a string of ``[]{},``."""
    steps, deepest, level = brackets.translate(STEPS), 0, 0
    for start in range(0, len(steps), CHUNK):
        step = np.frombuffer(steps, np.int8, count=min(CHUNK, len(steps) - start), offset=start) - 1
        running = np.cumsum(step, dtype=np.int32) + level
        deepest, level = max(deepest, int(running.max())), int(running[-1])
    return deepest
