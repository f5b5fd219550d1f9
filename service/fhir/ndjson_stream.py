"""Bulk Data NDJSON as a stream of PatientRecords, in memory bounded whatever the export's size.

LocalSource reads a whole source before grouping, which suits Bundles and the service's random
access, but an `$export` of 10,000 patients is 4 GB of JSON. This source makes two passes:

1. **Partition** each line by patient without decoding it. The resource type and the subject
   reference are read from the raw bytes; a line of a type the rules never read is dropped
   undecoded, and so is an Observation none of whose `"code"` values is one the rules select
   Observations by (when the caller gives those codes). Each kept line is appended, still raw,
   to a scratch bucket chosen by a hash of its patient id, so that one bucket holds about
   `bucket_bytes` of kept JSON.
2. **Screen bucket by bucket**: decode one bucket, group it into PatientRecords, hand them out,
   forget them.

The shortcuts are exact, never approximate: wherever the bytes could mislead (several
`"resourceType"` keys, i.e. contained resources; JSON `\\u` escapes; a subject that is not a
plain `{"reference": ...}` object; a line with no recognisable type), the line is decoded and
placed the way LocalSource would place it. A line that is not JSON is reported with its file and
line number and skipped, if it could matter; lines of types no rule reads are never decoded, so
their defects are not reported. Medications are not about one patient: they are kept (decoded)
for the whole run, as references to them may come from any patient.

Records come out bucket by bucket, in the order of the Patient lines within a bucket; a source
that fits in one bucket keeps the Patient file's order.
"""

from __future__ import annotations

import json
import logging
import re
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, ClassVar

from service.fhir import json_input
from service.fhir.local_source import SourceError, source_files
from service.fhir.record import (
    KEPT_TYPES,
    SHARED_TYPES,
    PatientRecord,
    Resource,
    index_medication,
    is_fhir_id,
    patient_id_of,
    printable,
    subject_patient_id,
)
from service.fhir.scratch import scratch_folder
from service.fhir.source import file_population, not_in_source
from service.parallel import ordered_map

log = logging.getLogger(__name__)
DEFAULT_BUCKET_BYTES = 16_000_000
MAX_BUCKETS = 512  # open scratch files at once; far below the usual 1,024+ descriptor limit
# Share of an export the partition usually keeps (bench/README.md: 14%); only sizes the buckets.
_KEPT_SHARE = 0.25

_TYPE_KEY = b'"resourceType"'
_TYPE = re.compile(rb'"resourceType"\s*:\s*"([A-Za-z]+)"')
_SUBJECT = re.compile(rb'"(?:subject|patient)"\s*:\s*\{[^{}]*?"reference"\s*:\s*"([^"\\]*)"')
_CODE = re.compile(rb'"code"\s*:\s*"((?:[^"\\]|\\.)*)"')
_LINE_START = b'{"resourceType":"'
_SPECIAL = re.compile(rb"[\\\x80-\xff]")  # a backslash or a byte that is not ASCII
_BLOCK_BYTES = 8 * 1024 * 1024
_MIN_SPAN_BYTES = 32 * 1024 * 1024  # smaller spans cost more in bucket files than they save
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


@dataclass
class Partition:
    """The outcome of pass 1: scratch buckets of raw lines, and every Medication, decoded.

    A bucket is written in parts, one per partition task (one task, or several in worker
    processes); its parts are read in task order, which is the files' order.
    """

    files: list[Path]
    buckets: list[Path]
    medications: dict[str, Resource]
    wanted: frozenset[str] | None
    parts: int = 1
    spans: list[_Span] = field(default_factory=list)
    first_lines: list[int] = field(default_factory=list)  # of each span, in its file

    def where(self, span: int, number: int) -> str:
        """'file line N' for line `number` of a span."""
        file = self.files[self.spans[span].file_index]
        return f"{file} line {self.first_lines[span] + number - 1}"

    def part(self, bucket: Path, task: int) -> Path:
        return bucket.with_name(f"{bucket.name}.{task}")

    def remove(self, bucket: Path) -> None:
        """Drop a bucket's scratch files once its patients are done (frees disk early)."""
        for task in range(self.parts):
            self.part(bucket, task).unlink(missing_ok=True)


@dataclass
class NdjsonStream:
    """One or more `.ndjson` files (a file, or a folder of them) read as PatientRecords (a
    service.fhir.source.PatientSource). It is made for `records()` of a whole population:
    `record()` and `patient_ids()` each take a pass over the files."""

    is_server: ClassVar[bool] = False
    path: Path
    line_filter: LineFilter = field(default_factory=LineFilter)
    bucket_bytes: int = DEFAULT_BUCKET_BYTES
    scratch_dir: Path | None = None
    problems: list[str] = field(default_factory=list)

    @staticmethod
    def handles(path: Path) -> bool:
        """True when `path` is an NDJSON file or a folder whose FHIR files are all NDJSON."""
        if path.is_file():
            return path.suffix == ".ndjson"
        if not path.is_dir():
            return False
        return {p.suffix for p in source_files(path)} == {".ndjson"}

    def files(self) -> list[Path]:
        if not self.path.exists():
            raise SourceError(f"{self.path}: no such file or folder")
        if self.path.is_file():
            return [self.path]
        found = [p for p in source_files(self.path) if p.suffix == ".ndjson"]
        if not found:
            raise SourceError(f"{self.path}: no .ndjson files in this folder")
        return found

    def records(self, patient_ids: Iterable[str] | None = None) -> Iterator[PatientRecord]:
        """Every patient's record (or only those of `patient_ids`), one bucket in memory at once."""
        seen: set[str] = set()
        with self.partitioned(patient_ids) as partition:
            for bucket in partition.buckets:
                for record in self.read_bucket(partition, bucket):
                    seen.add(record.patient_id)
                    yield record
                partition.remove(bucket)
        self.report_missing(partition, seen)

    def record(self, patient_id: str) -> PatientRecord:
        """One patient's record (a pass over the files); PatientNotInSource when it is not there."""
        with self.partitioned([patient_id]) as partition:
            for bucket in partition.buckets:
                for record in self.read_bucket(partition, bucket):
                    return record
        raise not_in_source(self.path, patient_id)

    def patient_ids(
        self, search: str | None = None, group: str | None = None, ids: Iterable[str] | None = None
    ) -> list[str]:
        """Every patient's id (or the FHIR ids of `ids`); see PatientSource.patient_ids. Every
        patient's id is a pass that decodes only Patient lines; what it finds wrong is not
        added to `problems` (the pass that reads the records says it)."""
        return file_population(search, group, ids, self._every_patient_id, log)

    def _every_patient_id(self) -> list[str]:
        patients_only = LineFilter(kept_types=frozenset({"Patient"}))
        stream = NdjsonStream(self.path, patients_only, self.bucket_bytes, self.scratch_dir)
        return [record.patient_id for record in stream.records()]

    @contextmanager
    def partitioned(
        self, patient_ids: Iterable[str] | None = None, min_buckets: int = 1, workers: int = 1
    ) -> Iterator[Partition]:
        """Pass 1: the kept lines in scratch buckets, removed when the block ends.

        `min_buckets` lets worker processes share a small source (one bucket each at least);
        with `workers` > 1, large files are cut into ranges partitioned by worker processes.
        """
        wanted = frozenset(patient_ids) if patient_ids else None
        files = self.files()
        sizes = [_size(file) for file in files]
        count = max(min_buckets, int(sum(sizes) * _KEPT_SHARE / self.bucket_bytes) + 1)
        tasks = _tasks(files, sizes, workers)
        spans = [span for task in tasks for span in task.spans]
        with scratch_folder(self.scratch_dir) as tmp:  # removed on SIGTERM/SIGINT too
            partition = Partition(
                files=files,
                buckets=[Path(tmp) / f"bucket-{i}.ndjson" for i in range(min(MAX_BUCKETS, count))],
                medications={},
                wanted=wanted,
                parts=len(tasks),
                spans=spans,
                first_lines=[0] * len(spans),
            )
            global _current_partitioner
            _current_partitioner = _Partitioner(self, partition)
            try:
                outcomes = ordered_map(_run_task, tasks, workers, self._say_broken)
                next_line = dict.fromkeys(range(len(files)), 1)
                finished: list[_TaskOutcome] = []
                for outcome in outcomes:  # in task order, which is the files' order
                    finished.append(outcome)
                    for span, lines in outcome.line_counts:
                        partition.first_lines[span] = next_line[spans[span].file_index]
                        next_line[spans[span].file_index] += lines
                    partition.medications.update(outcome.medications)
                    for span, number, what in outcome.problems:
                        self.problems.append(f"{partition.where(span, number)}: {what}")
                _refuse_files_without_a_resource(files, spans, finished, next_line)
            finally:
                _current_partitioner = None
            yield partition

    def _say_broken(self) -> None:
        self.problems.append(f"{self.path}: a worker process died; the rest was read in this one")

    def read_bucket(self, partition: Partition, bucket: Path) -> Iterator[PatientRecord]:
        """Pass 2 for one bucket: its patients' records, in the order of their Patient lines."""
        patients: dict[str, PatientRecord] = {}
        others: list[tuple[str, Resource]] = []
        medications = partition.medications
        for line in _lines_of(partition, bucket):
            key_bytes, span, number, raw = line.split(b"\t", 3)
            key = key_bytes.decode("unicode_escape")
            resource = _decode(raw)
            if isinstance(resource, str):
                self.problems.append(f"{partition.where(int(span), int(number))}: {resource}")
                continue
            if resource["resourceType"] == "Patient":
                record = patients.setdefault(key, PatientRecord(key, medications=medications))
                record.add(resource)
            elif subject_patient_id(resource) == key:
                others.append((key, resource))
            # else: the subject is not a Patient reference after all; LocalSource drops it too
        for key, resource in others:
            if key in patients:
                patients[key].add(resource)
        yield from patients.values()

    def report_missing(self, partition: Partition, seen: set[str]) -> None:
        """A problem for each asked-for patient the source did not have."""
        for missing in sorted((partition.wanted or frozenset()) - seen):
            self.problems.append(f"{self.path}: no Patient with id {missing!r}")


class _Partitioner:
    """Pass 1: every kept line, raw, into the bucket of its patient (see the module docstring)."""

    def __init__(self, source: NdjsonStream, partition: Partition) -> None:
        self.partition = partition
        self.wanted = partition.wanted
        line_filter = source.line_filter
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

    def run(self, task: _Task) -> _TaskOutcome:
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
        return _TaskOutcome(self.medications, self.problems, counts, list(self.blank.items()))

    def _span(self, span: _Span, task: int, handles: dict[int, IO[bytes]]) -> int:
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
            start, end = _line_aligned(reader, span.start), _line_aligned(reader, span.end)
            reader.seek(start)
            for block in _blocks(reader, end - start):
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
        resource = _decode(line)
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
            patient_id = resource.get("id")
            if not isinstance(patient_id, str):
                self.problems.append((self.span, number, "Patient without an id, skipped"))
                return None
            if not is_fhir_id(patient_id):
                shown = f"Patient/{printable(patient_id)}: not a FHIR id, skipped"
                self.problems.append((self.span, number, shown))
                return None
            return patient_id
        return subject_patient_id(resource)


@dataclass(frozen=True)
class _Span:
    """Bytes [start, end) of one file; its lines are those that start inside."""

    index: int
    file_index: int
    start: int
    end: int


@dataclass(frozen=True)
class _Task:
    """The spans one partition task reads (in a worker, or here)."""

    index: int
    spans: tuple[_Span, ...]


@dataclass(frozen=True)
class _TaskOutcome:
    medications: dict[str, Resource]
    problems: list[tuple[int, int, str]]  # (span, line within the span, what)
    line_counts: list[tuple[int, int]]  # (span, lines in it)
    blank_lines: list[tuple[int, int]]  # (span, blank lines in it)


_current_partitioner: _Partitioner | None = None  # what a forked worker inherits


def _run_task(task: _Task) -> _TaskOutcome:
    assert _current_partitioner is not None, "a partition task runs only under partitioned()"
    return _current_partitioner.run(task)


def _tasks(files: list[Path], sizes: list[int], workers: int) -> list[_Task]:
    """Spans of about total / (4 x workers) bytes (at least _MIN_SPAN_BYTES), grouped into
    tasks of about that size; one task reading every file whole when workers == 1."""
    if workers <= 1:
        return [_Task(0, tuple(_Span(i, i, 0, size) for i, size in enumerate(sizes)))]
    target = max(_MIN_SPAN_BYTES, sum(sizes) // (4 * workers))
    tasks: list[_Task] = []
    group: list[_Span] = []
    grouped = spans = 0
    for file_index, size in enumerate(sizes):
        for start in range(0, max(size, 1), target):
            group.append(_Span(spans, file_index, start, min(size, start + target)))
            grouped += group[-1].end - start
            spans += 1
            if grouped >= target:
                tasks.append(_Task(len(tasks), tuple(group)))
                group, grouped = [], 0
    if group:
        tasks.append(_Task(len(tasks), tuple(group)))
    return tasks


def _refuse_files_without_a_resource(
    files: list[Path], spans: list[_Span], outcomes: list[_TaskOutcome], next_line: dict[int, int]
) -> None:
    """SourceError for a file whose every line that is not blank was a problem: it is not
    NDJSON (random bytes gave 7,733 warnings and exit 0), and saying so once is more useful."""
    problems: dict[int, int] = {}
    blank: dict[int, int] = {}
    for outcome in outcomes:
        for span, _number, _what in outcome.problems:
            problems[spans[span].file_index] = problems.get(spans[span].file_index, 0) + 1
        for span, count in outcome.blank_lines:
            blank[spans[span].file_index] = blank.get(spans[span].file_index, 0) + count
    for index, file in enumerate(files):
        lines = next_line[index] - 1
        if problems.get(index, 0) and problems[index] + blank.get(index, 0) >= lines:
            raise SourceError(
                f"{file}: not NDJSON (none of its {lines:,} lines is a FHIR resource)"
            )


def _line_aligned(reader: IO[bytes], offset: int) -> int:
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


def _decode(raw: bytes) -> Resource | str:
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


def _lines_of(partition: Partition, bucket: Path) -> Iterator[bytes]:
    for task in range(partition.parts):
        path = partition.part(bucket, task)
        if path.exists():
            with path.open("rb") as handle:
                yield from handle


def _not_droppable(examined: set[str]) -> re.Pattern[bytes]:
    """Matches the newline before (and, on a buffer starting with one, the start of) every line
    that does not begin `{"resourceType":"T"` with T outside `examined`."""
    names = b"|".join(re.escape(name.encode()) for name in sorted(examined))
    return re.compile(rb'\n(?!\{"resourceType":"(?!(?:' + names + rb')")[A-Za-z]+")')


def _line_start(block: bytes, position: int) -> int:
    return block.rfind(b"\n", 0, position) + 1


def _blocks(reader: IO[bytes], limit: int) -> Iterator[bytes]:
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


def _size(file: Path) -> int:
    try:
        return file.stat().st_size
    except OSError as exc:
        raise SourceError(f"{file}: cannot be read ({exc.strerror})") from exc
