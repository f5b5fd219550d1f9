"""Local sources: a Bundle of any type, a folder of Bundles, or Bulk Data NDJSON files.

The same PatientRecords a FHIR server gives, for demos, tests and sites that hand over extracts.
A file that cannot be read at all stops the screen with a SourceError naming the file; a single
bad line of an NDJSON file is reported and skipped, so one bad resource never fails a population.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from service.fhir import json_input
from service.fhir.record import (
    KEPT_TYPES,
    SHARED_TYPES,
    PatientRecord,
    Resource,
    index_medication,
    patient_id_problem,
    subject_patient_id,
)
from service.fhir.source import SourceError as SourceError
from service.fhir.source import file_population, not_in_source

log = logging.getLogger(__name__)


@dataclass
class LocalSource:
    """Reads every resource under `path`, then hands out one PatientRecord per Patient
    (a service.fhir.source.PatientSource)."""

    is_server: ClassVar[bool] = False
    path: Path
    problems: list[str] = field(default_factory=list)
    _loaded: dict[str, PatientRecord] | None = field(default=None, init=False, repr=False)

    def files(self) -> list[Path]:
        if not self.path.exists():
            raise SourceError(f"{self.path}: no such file or folder")
        if self.path.is_file():
            return [self.path]
        found = source_files(self.path)
        if not found:
            raise SourceError(f"{self.path}: no .json or .ndjson files in this folder")
        return found

    def records(self, patient_ids: Iterable[str] | None = None) -> Iterator[PatientRecord]:
        wanted = list(dict.fromkeys(patient_ids)) if patient_ids else None
        patients = self._patients()
        if wanted is None:
            yield from patients.values()
            return
        for patient_id in wanted:
            if patient_id in patients:
                yield patients[patient_id]
            else:
                self.problems.append(str(not_in_source(self.path, patient_id)))

    def record(self, patient_id: str) -> PatientRecord:
        """One patient's record; PatientNotInSource (a SourceError) when it has no such Patient."""
        patients = self._patients()
        if patient_id not in patients:
            raise not_in_source(self.path, patient_id)
        return patients[patient_id]

    def patient_ids(
        self, search: str | None = None, group: str | None = None, ids: Iterable[str] | None = None
    ) -> list[str]:
        """Every patient's id (or the FHIR ids of `ids`); see PatientSource.patient_ids."""
        return file_population(search, group, ids, lambda: list(self._patients()), log)

    def _patients(self) -> dict[str, PatientRecord]:
        """Read the whole source once; later calls reuse it (a service screens it many times)."""
        if self._loaded is None:
            self._loaded = self._load()
        return self._loaded

    def _load(self) -> dict[str, PatientRecord]:
        patients: dict[str, PatientRecord] = {}
        pending: list[tuple[Resource, str | None]] = []
        full_url_to_patient: dict[str, str] = {}
        medications: dict[str, Resource] = {}
        for resource, full_url in self._resources():
            resource_type = resource.get("resourceType")
            if resource_type == "Patient":
                problem = patient_id_problem(resource)
                if problem is not None:  # without an id, say where the Patient was
                    has_id = isinstance(resource.get("id"), str)
                    self.problems.append(
                        ("" if has_id else f"{full_url or 'a Patient'}: ") + problem
                    )
                    continue
                patient_id = resource["id"]
                record = patients.setdefault(
                    patient_id, PatientRecord(patient_id, medications=medications)
                )
                record.add(resource)
                if full_url:
                    full_url_to_patient[full_url] = patient_id
                    record.aliases.add(full_url)
            elif resource_type in SHARED_TYPES:
                index_medication(medications, resource, full_url)
            elif resource_type in KEPT_TYPES:
                pending.append((resource, full_url))
        for resource, _full_url in pending:
            patient_id = subject_patient_id(resource, full_url_to_patient)
            if patient_id is not None and patient_id in patients:
                patients[patient_id].add(resource)
        return patients

    def _resources(self) -> Iterator[tuple[Resource, str | None]]:
        for file in self.files():
            if file.suffix == ".ndjson":
                yield from self._ndjson(file)
            else:
                yield from _bundle_or_resource(file, _read_json(file))

    def _ndjson(self, file: Path) -> Iterator[tuple[Resource, str | None]]:
        try:
            handle = file.open("rb")  # decoded line by line: one bad line is one problem
        except OSError as exc:
            raise SourceError(f"{file}: cannot be opened ({exc.strerror})") from exc
        first_problem, resources = len(self.problems), 0
        with handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    resource = json_input.loads(line)
                except json.JSONDecodeError as exc:
                    self.problems.append(
                        f"{file} line {number}: not valid JSON ({exc.msg}), skipped"
                    )
                    continue
                except UnicodeDecodeError:
                    self.problems.append(f"{file} line {number}: not UTF-8, skipped")
                    continue
                except json_input.NestedTooDeeply as exc:
                    self.problems.append(f"{file} line {number}: {exc}, skipped")
                    continue
                if not isinstance(resource, dict) or "resourceType" not in resource:
                    self.problems.append(f"{file} line {number}: not a FHIR resource, skipped")
                    continue
                resources += 1
                yield resource, None
        if not resources and len(self.problems) > first_problem:
            lines = len(self.problems) - first_problem
            del self.problems[first_problem:]  # said once, below, instead of once per line
            raise SourceError(
                f"{file}: not NDJSON (none of its {lines:,} lines is a FHIR resource)"
            )


def source_files(folder: Path) -> list[Path]:
    """The FHIR files under a folder, sorted: .json (Bundles or resources) and .ndjson, not the
    fixtures' .expected.json."""
    return sorted(
        p for p in folder.rglob("*")
        if p.is_file() and p.suffix in (".json", ".ndjson")
        and not p.name.endswith(".expected.json")
    )  # fmt: skip


def _read_json(file: Path) -> Any:
    try:
        with file.open(encoding="utf-8") as handle:
            return json_input.loads(handle.read())
    except json.JSONDecodeError as exc:
        raise SourceError(
            f"{file}: line {exc.lineno} column {exc.colno}: not valid JSON ({exc.msg})"
        ) from exc
    except json_input.NestedTooDeeply as exc:
        raise SourceError(f"{file}: not a FHIR resource or Bundle ({exc})") from None
    except UnicodeDecodeError as exc:
        raise SourceError(f"{file}: not UTF-8 text") from exc
    except OSError as exc:
        raise SourceError(f"{file}: cannot be read ({exc.strerror})") from exc


def _bundle_or_resource(file: Path, document: Any) -> Iterator[tuple[Resource, str | None]]:
    if not isinstance(document, dict) or not isinstance(document.get("resourceType"), str):
        raise SourceError(f"{file}: not a FHIR resource or Bundle (no resourceType)")
    if document["resourceType"] != "Bundle":
        yield document, None
        return
    for entry in document.get("entry") or []:
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
            continue  # e.g. a delete entry of a transaction: nothing to screen
        full_url = entry.get("fullUrl")
        yield resource, full_url if isinstance(full_url, str) else None
