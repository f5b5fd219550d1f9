"""Limits on what one FHIR answer may cost: bytes after decompression, total time, JSON depth.

A read timeout bounds each wait for the next bytes, not the answer: a server sending one byte
per second is never late. A gzip body of 522 KB inflated to 1.2 GB in memory before anything
looked at it. So the body is read here in small pieces, decompressed by us with an output bound
(zlib's max_length, whatever urllib3 version is installed), counted against the cap, and the
deadline is checked after every piece. JSON nested deeper than any FHIR resource is refused
before code that walks it recursively can hit Python's recursion limit.
"""

from __future__ import annotations

import json
import time
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol

DEFAULT_MAX_ANSWER_BYTES: Final = 50 * 1024 * 1024  # 50 MiB; a real patient's page is under 5 MB
DEFAULT_DEADLINE_S: Final = 120.0  # the read timeout is 30 s; a whole answer gets four of them
# FHIR resources nest about 10 levels (a batch-response Bundle adds 4, contained resources a
# few more); 100 is generous for real data and far below Python's recursion limit.
MAX_JSON_DEPTH: Final = 100
CHUNK_BYTES: Final = 64 * 1024
# Decompressed output per step: memory stays near the cap plus one piece, whatever the ratio.
PIECE_BYTES: Final = 1024 * 1024
# What we ask for (Accept-Encoding) and can decompress with a bound.
ACCEPTED_ENCODINGS: Final = "gzip, deflate"


class AnswerTooLarge(Exception):
    """The answer passed the cap; the message says how large the cap is."""


class AnswerTooSlow(Exception):
    """The deadline passed before the answer was whole."""


class AnswerUnreadable(Exception):
    """A content encoding we did not ask for, or a compressed body that does not decompress."""


class TooDeep(ValueError):
    """JSON nested deeper than MAX_JSON_DEPTH."""


class RawBody(Protocol):
    """What urllib3's HTTPResponse offers: read1 returns what has arrived (at least a byte)."""

    def read1(self, amt: int | None = None, decode_content: bool | None = None) -> bytes: ...


@dataclass(frozen=True)
class AnswerLimits:
    max_bytes: int = DEFAULT_MAX_ANSWER_BYTES
    deadline_s: float = DEFAULT_DEADLINE_S
    max_depth: int = MAX_JSON_DEPTH

    def __post_init__(self) -> None:
        if self.max_bytes < 1 or self.deadline_s <= 0 or self.max_depth < 1:
            raise ValueError("answer limits must be positive")


def read_body(
    raw: RawBody,
    headers: Mapping[str, str],
    limits: AnswerLimits,
    deadline_at: float,
    monotonic: Callable[[], float] = time.monotonic,
) -> bytes:
    """The decompressed body, read piece by piece; AnswerTooLarge past `limits.max_bytes`,
    AnswerTooSlow once `monotonic()` passes `deadline_at`, AnswerUnreadable for an encoding
    we cannot bound."""
    inflater = _Inflater.for_encoding(headers.get("Content-Encoding"))
    declared = (headers.get("Content-Length") or "").strip()
    if inflater is None and declared.isdigit() and int(declared) > limits.max_bytes:
        raise AnswerTooLarge(_too_large(limits.max_bytes))
    body = bytearray()
    while True:
        if monotonic() > deadline_at:
            raise AnswerTooSlow(f"the answer was not complete after {limits.deadline_s:g} s")
        chunk = raw.read1(CHUNK_BYTES, decode_content=False)
        if not chunk:
            break
        for piece in inflater.inflate(chunk, PIECE_BYTES) if inflater else (chunk,):
            if len(body) + len(piece) > limits.max_bytes:
                raise AnswerTooLarge(_too_large(limits.max_bytes))
            body += piece
    return bytes(body)


def parse_json(
    body: str | bytes,
    max_depth: int = MAX_JSON_DEPTH,
    object_pairs_hook: Callable[[list[tuple[str, Any]]], Any] | None = None,
) -> Any:
    """json.loads, refusing nesting deeper than `max_depth` (TooDeep, a ValueError) whether the
    parser itself gives up (RecursionError) or code walking the result would. The one JSON
    decoder for everything from outside: server answers here, files, lines and request bodies
    through service.fhir.json_input."""
    try:
        value = json.loads(body, object_pairs_hook=object_pairs_hook)
    except RecursionError as exc:
        raise TooDeep(f"the JSON is nested deeper than {max_depth} levels") from exc
    if _brackets(body) > max_depth and depth_exceeds(value, max_depth):
        raise TooDeep(f"the JSON is nested deeper than {max_depth} levels")
    return value


def _brackets(data: str | bytes) -> int:
    """An upper bound of the nesting depth, counted in C: most documents need no walk at all."""
    if isinstance(data, bytes):
        return data.count(b"{") + data.count(b"[")
    return data.count("{") + data.count("[")


def depth_exceeds(value: Any, limit: int) -> bool:
    """Whether objects and arrays nest deeper than `limit`; iterative, so it cannot recurse."""
    if not isinstance(value, dict | list):
        return False
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node
        for child in children:
            if isinstance(child, dict | list):
                if depth + 1 > limit:
                    return True
                stack.append((child, depth + 1))
    return False


class _Inflater:
    """gzip or deflate decompression whose output per call is bounded (zlib max_length)."""

    def __init__(self, wbits: int) -> None:
        self._wbits = wbits
        self._z = zlib.decompressobj(wbits)

    @classmethod
    def for_encoding(cls, encoding: str | None) -> _Inflater | None:
        name = (encoding or "identity").strip().lower()
        if name in ("", "identity"):
            return None
        if name in ("gzip", "x-gzip"):
            return cls(16 + zlib.MAX_WBITS)
        if name == "deflate":
            return cls(32 + zlib.MAX_WBITS)  # zlib-wrapped (the standard) or gzip: auto-detected
        raise AnswerUnreadable(f"the answer is compressed as {name!r}, which was not asked for")

    def inflate(self, data: bytes, piece: int) -> Iterator[bytes]:
        """The decompressed output of `data`, in pieces of at most `piece` bytes: the caller
        counts each against the cap before the next one exists. Concatenated gzip members are
        read one after the other, as HTTP clients do."""
        while True:
            try:
                out = self._z.decompress(data, piece)
            except zlib.error as exc:
                raise AnswerUnreadable("the compressed answer does not decompress") from exc
            data = self._z.unconsumed_tail
            if self._z.eof and self._z.unused_data:
                data = self._z.unused_data
                self._z = zlib.decompressobj(self._wbits)
            if out:
                yield out
            if not data and len(out) < piece:  # input used up and nothing held back
                return


def _too_large(max_bytes: int) -> str:
    return f"the answer is larger than {max_bytes:,} bytes (MEDCARE_FHIR_MAX_ANSWER_BYTES)"
