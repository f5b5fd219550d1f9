"""Screening a whole population from a local source, optionally in worker processes.

A screen of one patient is pure CPU (fhir.resources validation is most of it: about 0.1 ms per
resource a rule may read, 17 times the cost of decoding it; bench/README.md). An NDJSON export
is partitioned once (NdjsonStream, pass 1, in this process); its buckets are then independent,
so `workers` processes screen one bucket each at a time and send the results back here, where
they are stored and printed in bucket order. The workers are forked: they inherit the loaded
mappings and the partition's Medications instead of reading them again.

A screen that raises (a bug, never bad data: the engine turns bad data into `unknown`) costs
only that patient its result; it is reported by id, never with patient data.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from service.fhir.ndjson_stream import NdjsonStream, Partition
from service.fhir.record import PatientRecord
from service.parallel import fork_available, ordered_map
from service.screening.engine import Screener
from service.screening.result import ScreenResult

# Buckets per worker at least, so that a small export still keeps every worker busy and a slow
# bucket does not leave the others idle at the end.
BUCKETS_PER_WORKER = 4


@dataclass(frozen=True)
class Screened:
    """One patient's outcome: a result, or the name of the error that prevented it."""

    patient_id: str
    result: ScreenResult | None
    error: str | None = None


def screen_record(screener: Screener, record: PatientRecord, as_of: date) -> Screened:
    try:
        return Screened(record.patient_id, screener.screen(record, as_of))
    except Exception as exc:  # a bug must not cost the other patients their screen
        return Screened(record.patient_id, None, type(exc).__name__)


def screen_records(
    records: Iterable[PatientRecord], screener: Screener, as_of: date
) -> Iterator[Screened]:
    """Screen records one after the other, in this process."""
    for record in records:
        yield screen_record(screener, record, as_of)


def screen_stream(
    stream: NdjsonStream,
    screener: Screener,
    as_of: date,
    workers: int = 1,
    patient_ids: Iterable[str] | None = None,
) -> Iterator[Screened]:
    """Every patient of an NDJSON source, screened by `workers` processes (1: this one)."""
    if workers <= 1 or not fork_available():
        yield from screen_records(stream.records(patient_ids), screener, as_of)
        return
    seen: set[str] = set()
    buckets = workers * BUCKETS_PER_WORKER
    with stream.partitioned(patient_ids, min_buckets=buckets, workers=workers) as partition:
        for screened, problems in _screen_buckets(stream, partition, screener, as_of, workers):
            stream.problems.extend(problems)
            for item in screened:
                seen.add(item.patient_id)
                yield item
    stream.report_missing(partition, seen)


def _screen_buckets(
    stream: NdjsonStream, partition: Partition, screener: Screener, as_of: date, workers: int
) -> Iterator[tuple[list[Screened], list[str]]]:
    """Each bucket's outcome, in bucket order, from forked workers (see service.parallel); a
    dead worker costs nothing but a problem saying so."""
    global _current_job
    _current_job = _Job(stream, partition, screener, as_of)

    def say_broken() -> None:
        stream.problems.append(
            f"{stream.path}: a worker process died; the rest was screened in this one"
        )

    try:
        outcomes = ordered_map(_screen_bucket, partition.buckets, workers, say_broken)
        for bucket, outcome in zip(partition.buckets, outcomes, strict=True):
            yield outcome
            partition.remove(bucket)
    finally:
        _current_job = None


@dataclass
class _Job:
    """What a forked worker inherits: set just before the pool forks, cleared after."""

    stream: NdjsonStream
    partition: Partition
    screener: Screener
    as_of: date


_current_job: _Job | None = None  # the job a forked worker inherits (see screen_stream)


def _screen_bucket(bucket: Path) -> tuple[list[Screened], list[str]]:
    """In a worker: screen one bucket; return its results and the problems it reported."""
    job = _current_job
    assert job is not None, "a worker runs only under screen_stream"
    already = len(job.stream.problems)
    screened = [
        screen_record(job.screener, record, job.as_of)
        for record in job.stream.read_bucket(job.partition, bucket)
    ]
    problems = job.stream.problems[already:]
    del job.stream.problems[already:]  # the caller adds them, wherever this ran
    return screened, problems
