"""Pass 1 of NdjsonStream: each raw line into the scratch bucket of its patient, undecoded where
the bytes say enough (the shortcuts and why they are exact: service/fhir/ndjson_stream.py)."""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING

from service.fhir import json_input
from service.fhir.record import (
    KEPT_TYPES,
    SHARED_TYPES,
    Resource,
    index_medication,
    patient_id_of,
    patient_id_problem,
    subject_patient_id,
)
from service.fhir.source import SourceError

if TYPE_CHECKING:
    from service.fhir.ndjson_stream import Partition

_TYPE_KEY = b'"resourceType"'
_TYPE = re.compile(rb'"resourceType"\s*:\s*"([A-Za-z]+)"')
_SUBJECT = re.compile(rb'"(?:subject|patient)"\s*:\s*\{[^{}]*?"reference"\s*:\s*"([^"\\]*)"')
_CODE = re.compile(rb'"code"\s*:\s*"((?:[^"\\]|\\.)*)"')
_LINE_START = b'{"resourceType":"'
_SPECIAL = re.compile(rb"[\\\x80-\xff]")  # a backslash or a byte that is not ASCII
_BLOCK_BYTES = 8 * 1024 * 1024
# placed by id / kept for everyone (record.SHARED_TYPES)
_DECODE_ALWAYS = frozenset({b"Patient", b"Medication", b"Substance"})


@dataclass(frozen=True)
class LineFilter:
    """What the partition may drop without decoding: types outside `kept_types`, and (when
    `observation_codes` is given) Observations with no `"code"` value among those codes.

    `observation_codes` holds codes as `normalize` leaves them. `observation_pattern`, when
    given, must match every line that is plain ASCII without backslashes and has a `"code"`
    value whose normalised form is in `observation_codes`: such lines are then decided by one
    regex search in C; any other line's code values are checked one by one. Both come from
    service.screening.prefilter, so this module needs no knowledge of the mappings.
    """

    kept_types: frozenset[str] = KEPT_TYPES
    observation_codes: frozenset[str] | None = None
    normalize: Callable[[str], str] | None = None
    observation_pattern: re.Pattern[bytes] | None = None
    # Observations the rules read by their words (near misses), whatever their code: a line is
    # kept when this matches in it, or when it is not plain ASCII (its decoded text could match)
    near_miss_pattern: re.Pattern[bytes] | None = None

    def __post_init__(self) -> None:
        if self.observation_codes is not None and self.normalize is None:
            raise ValueError("observation_codes need the normalize function they were built with")


@dataclass(frozen=True)
class Span:
    """Bytes [start, end) of one file; its lines are those that start inside."""

    index: int
    file_index: int
    start: int
    end: int


@dataclass(frozen=True)
class Task:
    """The spans one partition task reads (in a worker, or here)."""

    index: int
    spans: tuple[Span, ...]


@dataclass(frozen=True)
class TaskOutcome:
    medications: dict[str, Resource]
    problems: list[tuple[int, int, str]]  # (span, line within the span, what)
    line_counts: list[tuple[int, int]]  # (span, lines in it)
    blank_lines: list[tuple[int, int]]  # (span, blank lines in it)


class Partitioner:
    """Pass 1: every kept line, raw, into the bucket of its patient (ndjson_stream explains)."""

    def __init__(self, line_filter: LineFilter, partition: Partition) -> None:
        self.partition = partition
        self.wanted = partition.wanted
        self.kept_types = line_filter.kept_types
        self.kept = frozenset(t.encode() for t in line_filter.kept_types)
        self.codes = line_filter.observation_codes
        self.code_bytes = (
            frozenset(c.encode() for c in self.codes) if self.codes is not None else None
        )
        self.normalize: Callable[[str], str] = line_filter.normalize or str
        self.pattern = line_filter.observation_pattern
        self.near_miss = line_filter.near_miss_pattern
        # Where a line may be skipped by its first bytes alone: a type no rule reads, or an
        # Observation when the plain-ASCII lines' codes can be decided by the pattern.
        examined = set(line_filter.kept_types)
        if self.codes is not None and self.pattern is not None:
            examined.discard("Observation")
        self.examine_at = _not_droppable(examined)
        # the prefix of an Observation line, when those are droppable; a block made only of
        # them (the Observation file of an export) needs no scan for other types
        self.uniform = _LINE_START + b'Observation"' if "Observation" not in examined else None
        # what one task found, returned to the caller (a worker's own copies otherwise)
        self.medications: dict[str, Resource] = {}
        self.problems: list[tuple[int, int, str]] = []
        self.blank: dict[int, int] = {}  # blank lines per span
        self.span = 0

    def run(self, task: Task) -> TaskOutcome:
        """Partition the task's spans into the buckets' part files of this task."""
        self.medications, self.problems, self.blank = {}, [], {}
        handles: dict[int, IO[bytes]] = {}
        counts: list[tuple[int, int]] = []
        try:
            for span in task.spans:
                counts.append((span.index, self._span(span, task.index, handles)))
        finally:
            for handle in handles.values():
                handle.close()
        return TaskOutcome(self.medications, self.problems, counts, list(self.blank.items()))

    def _span(self, span: Span, task: int, handles: dict[int, IO[bytes]]) -> int:
        """Partition the lines that start in the span; returns how many there are."""
        file = self.partition.files[span.file_index]
        try:
            reader = file.open("rb")
        except OSError as exc:
            raise SourceError(f"{file}: cannot be opened ({exc.strerror})") from exc
        self.span = span.index
        prefix = f"\t{span.index}\t".encode()
        before = 0  # lines of the span before the current block
        buckets = self.partition.buckets
        with reader:
            start, end = line_aligned(reader, span.start), line_aligned(reader, span.end)
            reader.seek(start)
            for block in blocks(reader, end - start):
                lines = block.count(b"\n")
                for number, line in self._examined(block, lines):
                    key = self._place(line, before + number)
                    if key is None or (self.wanted is not None and key not in self.wanted):
                        continue
                    encoded = key.encode("unicode_escape")  # no tab or newline survives this
                    bucket = zlib.crc32(encoded) % len(buckets)
                    if bucket not in handles:
                        handles[bucket] = self.partition.part(buckets[bucket], task).open("wb")
                    handles[bucket].write(
                        encoded + prefix + str(before + number).encode() + b"\t" + line
                    )
                before += lines
        return before

    def _examined(self, block: bytes, lines: int) -> Iterator[tuple[int, bytes]]:
        """The lines of a block (`lines` whole lines, each ending in a newline) that _place must see,
        with their numbers in the block (from 1). The others are dropped without a look.

        A line is skipped only when its first bytes are `{"resourceType":"T"` with T a type
        that can be dropped (outside kept_types, or Observation when codes are selected), no
        other `"resourceType"` is in it, it is plain ASCII without backslashes, and, for an
        Observation, the code pattern does not match in it. _place would drop each such line
        (see _selected); here the conditions are checked for a whole block with C-level
        scans, so the lines of a type no rule reads never reach Python one by one.
        """
        types = block.count(_TYPE_KEY)
        prefixed = block.count(b"\n" + _LINE_START) + block.startswith(_LINE_START)
        if types != prefixed:  # some line has two types (contained resources): look at all
            for number, line in enumerate(block.split(b"\n")[:-1], start=1):
                yield number, line + b"\n"
            return
        if self.uniform is not None and prefixed == lines == (
            block.count(b"\n" + self.uniform) + block.startswith(self.uniform)
        ):
            starts: set[int] = set()  # one droppable type only (a Bulk Data file per type)
        else:
            starts = {
                m.start() for m in self.examine_at.finditer(b"\n" + block) if m.start() < len(block)
            }
        if not block.isascii() or b"\\" in block:
            starts.update(_line_start(block, m.start()) for m in _SPECIAL.finditer(block))
        if self.pattern is not None:
            starts.update(_line_start(block, m.start()) for m in self.pattern.finditer(block))
        if self.near_miss is not None:
            starts.update(_line_start(block, m.start()) for m in self.near_miss.finditer(block))
        number, previous = 1, 0
        for start in sorted(starts):
            number += block.count(b"\n", previous, start)
            previous = start
            yield number, block[start : block.index(b"\n", start) + 1]

    def _place(self, line: bytes, number: int) -> str | None:
        """The patient id a kept line belongs to; None for a line that is dropped."""
        if b"\\u" in line or line.count(_TYPE_KEY) != 1:
            return self._place_decoded(line, number)
        match = _TYPE.search(line)
        if match is None:
            return self._place_decoded(line, number)
        kind = match.group(1)
        if kind not in self.kept:
            return None
        if kind in _DECODE_ALWAYS:
            return self._place_decoded(line, number)
        if kind == b"Observation" and self.codes is not None and not self._selected(line):
            return None
        holders = line.count(b'"subject"') + line.count(b'"patient"')
        found = _SUBJECT.search(line) if holders == 1 else None
        if found is None:
            return self._place_decoded(line, number)
        return patient_id_of(found.group(1).decode())

    def _selected(self, line: bytes) -> bool:
        """Whether an Observation line may be one the rules select (see _code_may_matter), or
        one they read as a near miss (LineFilter.near_miss_pattern)."""
        if self.near_miss is not None and (
            self.near_miss.search(line) or not line.isascii() or b"\\" in line
        ):
            return True
        if self.pattern is None:
            return self._code_may_matter(line)
        if self.pattern.search(line):
            return True
        if line.isascii() and b"\\" not in line:
            return False  # the pattern decides plain lines exactly (LineFilter's contract)
        return self._code_may_matter(line)

    def _code_may_matter(self, line: bytes) -> bool:
        """False only when no `"code"` value in the line is one the rules select by.

        Exact: the extractor drops an Observation whose code is in none of its value sets before
        reading anything else. Codes compare as the extractor compares them (normalised);
        systems are not compared, which only lets more lines through.
        """
        if self.code_bytes is None or self.codes is None:
            return True
        for value in _CODE.findall(line):
            if value in self.code_bytes:
                return True
            try:  # the JSON string exactly as the extractor will see it, then normalised
                text = json.loads(b'"' + value + b'"')
            except (json.JSONDecodeError, UnicodeDecodeError):
                return True  # undecidable here: let pass 2 decode (and report) the line
            if self.normalize(text) in self.codes:
                return True
        return False

    def _place_decoded(self, line: bytes, number: int) -> str | None:
        """The slow, exact path: decode the line and place it as LocalSource would."""
        if not line.strip():
            self.blank[self.span] = self.blank.get(self.span, 0) + 1
            return None
        resource = decode_line(line)
        if isinstance(resource, str):
            self.problems.append((self.span, number, resource))
            return None
        kind = resource["resourceType"]
        if kind not in self.kept_types:
            return None
        if kind in SHARED_TYPES:
            index_medication(self.medications, resource)
            return None
        if kind == "Patient":
            problem = patient_id_problem(resource)
            if problem is not None:
                self.problems.append((self.span, number, problem))
                return None
            return str(resource["id"])
        return subject_patient_id(resource)


def line_aligned(reader: IO[bytes], offset: int) -> int:
    """The start of the first line that starts at or after `offset` (or the end of the file)."""
    if offset == 0:
        return 0
    reader.seek(offset - 1)
    position = offset - 1
    while chunk := reader.read(65536):
        newline = chunk.find(b"\n")
        if newline >= 0:
            return position + newline + 1
        position += len(chunk)
    return position


def decode_line(raw: bytes) -> Resource | str:
    """The resource of one line, or what is wrong with the line."""
    try:
        resource = json_input.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        message = exc.msg if isinstance(exc, json.JSONDecodeError) else "not UTF-8"
        return f"not valid JSON ({message}), skipped"
    except json_input.NestedTooDeeply as exc:
        return f"{exc}, skipped"
    if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
        return "not a FHIR resource, skipped"
    return resource


def _not_droppable(examined: set[str]) -> re.Pattern[bytes]:
    """Matches the newline before (and, on a buffer starting with one, the start of) every line
    that does not begin `{"resourceType":"T"` with T outside `examined`."""
    names = b"|".join(re.escape(name.encode()) for name in sorted(examined))
    return re.compile(rb'\n(?!\{"resourceType":"(?!(?:' + names + rb')")[A-Za-z]+")')


def _line_start(block: bytes, position: int) -> int:
    return block.rfind(b"\n", 0, position) + 1


def blocks(reader: IO[bytes], limit: int) -> Iterator[bytes]:
    """The next `limit` bytes in blocks of whole lines, each line ending in a newline (one is
    added to a last line without it)."""
    rest = b""
    while limit > 0 and (data := reader.read(min(_BLOCK_BYTES, limit))):
        limit -= len(data)
        data = rest + data
        cut = data.rfind(b"\n") + 1
        block, rest = data[:cut], data[cut:]
        if block:
            yield block
    if rest:
        yield rest + b"\n"
