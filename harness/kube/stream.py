"""Reading a large JSON answer a piece at a time, so that memory holds one item, never the body.

A label-selected list of 12,500 GPU nodes' metadata is some 80 MB of JSON, several
hundred MB once parsed whole; the remediator keeps a few fields of each node. So the
list's `items` (or a Table's `rows`) are decoded one by one as the bytes arrive and
handed to the caller, who keeps what it needs. No kubernetes import here: this is
plain JSON.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Iterable, Iterator
from typing import Any

_DECODER = json.JSONDecoder()
_SPACE = " \t\r\n"
_TRIM = 1 << 16
"""Drop what has been read from the buffer once this much of it is behind us."""


class Malformed(ValueError):
    """The answer is not the JSON object it should be."""


class _Buffer:
    def __init__(self, chunks: Iterable[bytes]):
        self._chunks = iter(chunks)
        self._decode = codecs.getincrementaldecoder("utf-8")()
        self.text = ""
        self.pos = 0
        self.ended = False

    def more(self) -> bool:
        """Read another chunk; False at the end of the answer."""
        if self.ended:
            return False
        for chunk in self._chunks:
            if chunk:
                if self.pos > _TRIM:
                    self.text, self.pos = self.text[self.pos :], 0
                self.text += self._decode.decode(chunk)
                return True
        self.text += self._decode.decode(b"", final=True)
        self.ended = True
        return False

    def skip_space(self) -> str:
        """The next character that is not white space ("" at the end)."""
        while True:
            while self.pos < len(self.text) and self.text[self.pos] in _SPACE:
                self.pos += 1
            if self.pos < len(self.text):
                return self.text[self.pos]
            if not self.more():
                return ""

    def expect(self, *allowed: str) -> str:
        found = self.skip_space()
        if found not in allowed:
            shown = repr(found) if found else "the end of the answer"
            raise Malformed(f"expected one of {' '.join(allowed)} at character {self.pos}, found {shown}")
        self.pos += 1
        return found

    def value(self) -> Any:
        """One JSON value, reading more of the answer until it is whole."""
        self.skip_space()
        while True:
            try:
                found, end = _DECODER.raw_decode(self.text, self.pos)
            except json.JSONDecodeError as err:
                if self.more():
                    continue
                raise Malformed(f"not JSON: {err}") from None
            if end == len(self.text) and not self.ended and isinstance(found, int | float):
                self.more()  # a number may go on in the next chunk
                continue
            self.pos = end
            return found


def members(chunks: Iterable[bytes], streamed: str) -> Iterator[tuple[str, Any]]:
    """The members of a top-level JSON object, in the order they come: (name, value), except the
    array named `streamed`, whose elements come one by one as (streamed, element)."""
    buffer = _Buffer(chunks)
    buffer.expect("{")
    if buffer.skip_space() == "}":
        buffer.pos += 1
        return
    while True:
        name = buffer.value()
        if not isinstance(name, str):
            raise Malformed("an object member's name is not a string")
        buffer.expect(":")
        if name == streamed and buffer.skip_space() == "[":
            buffer.pos += 1
            if buffer.skip_space() == "]":
                buffer.pos += 1
            else:
                while True:
                    yield name, buffer.value()
                    if buffer.expect(",", "]") == "]":
                        break
        else:
            yield name, buffer.value()
        if buffer.expect(",", "}") == "}":
            return


def lines(chunks: Iterable[bytes]) -> Iterator[Any]:
    """A watch's answer: one JSON object a line, each yielded as it is whole."""
    pending = b""
    for chunk in chunks:
        pending += chunk
        *whole, pending = pending.split(b"\n")
        for line in whole:
            if line.strip():
                yield _line(line)
    if pending.strip():
        yield _line(pending)


def _line(line: bytes) -> Any:
    try:
        return json.loads(line)
    except ValueError as err:
        raise Malformed(f"a watch event that is not JSON: {err}") from None
