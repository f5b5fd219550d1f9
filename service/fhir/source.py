"""What every patient source offers: one protocol for files, a FHIR server and an NDJSON stream.

The CLI, the service's runtime and the benchmarks screen records without caring where they come
from; they need a record for a patient id, records for many, and the patient ids of a population
(everyone, a Patient search, a Group, a list of ids). This module says that once, as a Protocol
the three sources satisfy (checked by mypy at the bottom of this file), with the errors they share:

- `SourceError`: a local source that cannot be read, or has no such patient
  (`PatientNotInSource`, a SourceError, so callers that caught SourceError still do);
- `PopulationError`: a population that cannot be selected as asked, and `NeedsServer` (one of
  those) when files are asked for a search or a Group, which only a FHIR server can answer.

A server's read failures stay the FHIR error tree (service.fhir.errors): `record()` of a server
raises the FhirError of the request that failed, naming it and the patient.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from service.fhir.record import PatientRecord, is_fhir_id, printable

if TYPE_CHECKING:
    import logging

# What a file source answers to: the population search that means "every patient".
EVERY_PATIENT_SEARCHES = frozenset({"Patient", "Patient?"})


class SourceError(Exception):
    """A local source that cannot be read; the message names the file and the problem."""


class PatientNotInSource(SourceError):
    """`record()` of a local source asked for a patient it does not hold."""


class PopulationError(ValueError):
    """A population that cannot be selected as asked (a search of another resource type)."""


class NeedsServer(PopulationError):
    """A search (other than every Patient) or a Group asked of files: only a server answers."""

    def __init__(self) -> None:
        super().__init__(
            "searches other than 'Patient' and Groups need a FHIR server (MEDCARE_FHIR_BASE_URL)"
        )


@runtime_checkable
class PatientSource(Protocol):
    """A source of PatientRecords (LocalSource, NdjsonStream, ServerSource).

    `problems` collects what a file source skipped (a bad line, a Patient without an id) for the
    caller to report once; a server puts its gaps into each record's own `problems` instead.
    """

    problems: list[str]

    @property
    def is_server(self) -> bool:
        """True for a FHIR server: searches and Groups work, and results can be written back."""
        ...

    def record(self, patient_id: str) -> PatientRecord:
        """One patient's record. Raises PatientNotInSource (files) or the FhirError of the
        request that failed (a server: FhirNotFound/FhirGone for an unknown patient)."""
        ...

    def records(self, patient_ids: Iterable[str] | None = None) -> Iterator[PatientRecord]:
        """The records of `patient_ids` in order (files: a missing id becomes a problem and is
        skipped; a server stops at the first FhirError), or, with None, every patient of a file
        source (a server needs ids: ValueError)."""
        ...

    def patient_ids(
        self, search: str | None = None, group: str | None = None, ids: Iterable[str] | None = None
    ) -> Iterable[str]:
        """The ids of a population, each once: at most one of a Patient search, a Group id or a
        list of ids (a string that is not a FHIR id is skipped with a warning). With none, every
        patient of a file source; a server needs exactly one (ValueError). Files answer only the
        search 'Patient' (everyone) and raise NeedsServer for any other search or a Group."""
        ...


def file_population(
    search: str | None,
    group: str | None,
    ids: Iterable[str] | None,
    everyone: Callable[[], list[str]],
    log: logging.Logger,
) -> list[str]:
    """`PatientSource.patient_ids` for a file source, whose every patient is `everyone()`."""
    if sum(x is not None for x in (search, group, ids)) > 1:
        raise ValueError("give at most one of a Patient search, a Group or a list of ids")
    if group is not None or (search is not None and search.strip() not in EVERY_PATIENT_SEARCHES):
        raise NeedsServer()
    if ids is None:
        return everyone()
    return list(fhir_ids(ids, log))


def fhir_ids(found: Iterable[str], log: logging.Logger) -> Iterator[str]:
    """Each FHIR id of `found` once, in order; a string that is not a FHIR id (a newline or an
    escape sequence in it) is skipped with a warning that shows it escaped, so it never reaches
    a request, a log line or a terminal."""
    seen: set[str] = set()
    for patient_id in found:
        if not is_fhir_id(patient_id):
            log.warning("Patient/%s: not a FHIR id, skipped", printable(patient_id))
        elif patient_id not in seen:
            seen.add(patient_id)
            yield patient_id


def not_in_source(where: object, patient_id: str) -> PatientNotInSource:
    """The error (and, in `records()`, the problem text) for an id a file source lacks."""
    return PatientNotInSource(f"{where}: no Patient with id {printable(patient_id)!r}")


if TYPE_CHECKING:  # mypy checks here that the three sources are PatientSources
    from service.fhir.local_source import LocalSource
    from service.fhir.ndjson_stream import NdjsonStream
    from service.fhir.server_source import ServerSource

    def _conforming(
        local: LocalSource, stream: NdjsonStream, server: ServerSource
    ) -> tuple[PatientSource, PatientSource, PatientSource]:
        return local, stream, server
