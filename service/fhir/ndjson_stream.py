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
that fits in one bucket keeps the Patient file's order. Pass 1's line handling (LineFilter, the
Partitioner) is in ndjson_partition.py; this module runs the passes and cuts files into tasks.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from service.fhir.local_source import SourceError, source_files
from service.fhir.ndjson_partition import LineFilter as LineFilter
from service.fhir.ndjson_partition import (
    Partitioner,
    Span,
    Task,
    TaskOutcome,
    decode_line,
)
from service.fhir.record import PatientRecord, Resource, subject_patient_id
from service.fhir.scratch import scratch_folder
from service.fhir.source import file_population, not_in_source
from service.parallel import ordered_map

log = logging.getLogger(__name__)
DEFAULT_BUCKET_BYTES = 16_000_000
MAX_BUCKETS = 512  # open scratch files at once; far below the usual 1,024+ descriptor limit
# Share of an export the partition usually keeps (bench/README.md: 14%); only sizes the buckets.
_KEPT_SHARE = 0.25

_MIN_SPAN_BYTES = 32 * 1024 * 1024  # smaller spans cost more in bucket files than they save


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
    spans: list[Span] = field(default_factory=list)
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
            _current_partitioner = Partitioner(self.line_filter, partition)
            try:
                outcomes = ordered_map(_run_task, tasks, workers, self._say_broken)
                next_line = dict.fromkeys(range(len(files)), 1)
                finished: list[TaskOutcome] = []
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
            resource = decode_line(raw)
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


_current_partitioner: Partitioner | None = None  # what a forked worker inherits


def _run_task(task: Task) -> TaskOutcome:
    assert _current_partitioner is not None, "a partition task runs only under partitioned()"
    return _current_partitioner.run(task)


def _tasks(files: list[Path], sizes: list[int], workers: int) -> list[Task]:
    """Spans of about total / (4 x workers) bytes (at least _MIN_SPAN_BYTES), grouped into
    tasks of about that size; one task reading every file whole when workers == 1."""
    if workers <= 1:
        return [Task(0, tuple(Span(i, i, 0, size) for i, size in enumerate(sizes)))]
    target = max(_MIN_SPAN_BYTES, sum(sizes) // (4 * workers))
    tasks: list[Task] = []
    group: list[Span] = []
    grouped = spans = 0
    for file_index, size in enumerate(sizes):
        for start in range(0, max(size, 1), target):
            group.append(Span(spans, file_index, start, min(size, start + target)))
            grouped += group[-1].end - start
            spans += 1
            if grouped >= target:
                tasks.append(Task(len(tasks), tuple(group)))
                group, grouped = [], 0
    if group:
        tasks.append(Task(len(tasks), tuple(group)))
    return tasks


def _refuse_files_without_a_resource(
    files: list[Path], spans: list[Span], outcomes: list[TaskOutcome], next_line: dict[int, int]
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


def _lines_of(partition: Partition, bucket: Path) -> Iterator[bytes]:
    for task in range(partition.parts):
        path = partition.part(bucket, task)
        if path.exists():
            with path.open("rb") as handle:
                yield from handle


def _size(file: Path) -> int:
    try:
        return file.stat().st_size
    except OSError as exc:
        raise SourceError(f"{file}: cannot be read ({exc.strerror})") from exc
