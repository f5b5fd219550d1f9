"""The baseline: the FHIR reader an integration team writes first, feeding the same Screener.

    python -m bench.baseline --base http://127.0.0.1:8080/fhir --patient ID [--patient ID ...]

What "first" means here, and why each choice is the common one rather than a straw man:
- sequential per patient: read the Patient, then one search per resource type
  (`Observation?patient=X`, `Condition?patient=X`, the three medication types, `Procedure`),
  following `Bundle.link[next]` to the end;
- ALL of the patient's Observations (vital signs and routine labs included): filtering by code
  on the server needs the code lists, which the first version does not bother with;
- the server's default page size (no `_count`): HAPI and Medplum page by 20;
- every page parsed into fhir.resources models (`Bundle.model_validate`, which builds a model
  for every resource), because typed models are why people pick the library;
- a `medicationReference` is resolved by reading the Medication (`GET Medication/id`), once
  per patient;
- it does reuse one HTTP session (keep-alive) per worker: that is requests' documented default
  usage and costs nothing to write.
The rules are ours, unchanged: the raw dicts go into a PatientRecord and `Screener.screen`, so
any difference in a result between baseline and ours is a bug in one of the readers.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from datetime import date
from typing import Any

import requests
from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.bundle import Bundle

from service.compose import make_screener
from service.fhir.record import CLINICAL_TYPES, PatientRecord, Resource, type_and_id
from service.settings import Settings

FHIR_JSON = "application/fhir+json"
MEDICATION_TYPES = ("MedicationStatement", "MedicationRequest", "MedicationAdministration")
MAX_PAGES = 10_000  # a server that pages forever must not hang the benchmark


class BaselineError(RuntimeError):
    """A request the baseline could not complete (it does not retry: first versions don't)."""


@dataclass
class CpuSplit:
    """Thread CPU seconds of this reader, by stage (the HTTP client's own CPU is not included)."""

    json: float = 0.0
    models: float = 0.0

    def add(self, other: CpuSplit) -> None:
        self.json += other.json
        self.models += other.models


class NaiveReader:
    """One patient at a time, one search per resource type, everything parsed into models."""

    def __init__(self, base_url: str, page_size: int | None = None, timeout: float = 120.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.page_size = page_size
        self.timeout = timeout
        self.session = requests.Session()
        self.session.headers["Accept"] = FHIR_JSON
        self.requests = 0
        self.cpu = CpuSplit()

    def close(self) -> None:
        self.session.close()

    def _get(self, url: str, params: dict[str, str] | None = None) -> Any:
        self.requests += 1
        try:
            response = self.session.get(url, params=params, timeout=self.timeout)
        except requests.RequestException as exc:
            raise BaselineError(f"GET {url}: {type(exc).__name__}") from exc
        if response.status_code != 200:
            raise BaselineError(f"GET {response.url}: HTTP {response.status_code}")
        started = time.thread_time()
        document = response.json()
        self.cpu.json += time.thread_time() - started
        return document

    def _model(self, document: Resource) -> None:
        """Build the fhir.resources model of a resource or Bundle (and so of every entry)."""
        started = time.thread_time()
        if document.get("resourceType") == "Bundle":
            Bundle.model_validate(document)
        else:
            get_fhir_model_class(document["resourceType"]).model_validate(document)
        self.cpu.models += time.thread_time() - started

    def search_all(self, resource_type: str, patient_id: str) -> list[Resource]:
        """Every match of `<type>?patient=<id>`, following next links page by page."""
        params: dict[str, str] | None = {"patient": patient_id}
        if self.page_size is not None:
            params = {**(params or {}), "_count": str(self.page_size)}
        url: str | None = f"{self.base_url}/{resource_type}"
        found: list[Resource] = []
        for _ in range(MAX_PAGES):
            if url is None:
                return found
            page = self._get(url, params)
            params = None  # the next link carries the query
            self._model(page)
            for entry in page.get("entry") or []:
                resource = entry.get("resource")
                if isinstance(resource, dict) and resource.get("resourceType") == resource_type:
                    found.append(resource)
            url = next(
                (
                    link.get("url")
                    for link in page.get("link") or []
                    if link.get("relation") == "next"
                ),
                None,
            )
        raise BaselineError(f"{resource_type}?patient={patient_id}: more than {MAX_PAGES} pages")

    def read(self, patient_id: str) -> PatientRecord:
        patient = self._get(f"{self.base_url}/Patient/{patient_id}")
        self._model(patient)
        record = PatientRecord(patient_id)
        record.add(patient)
        for resource_type in CLINICAL_TYPES:
            for resource in self.search_all(resource_type, patient_id):
                record.add(resource)
        for resource_type in MEDICATION_TYPES:
            for resource in record.of_type(resource_type):
                reference = (resource.get("medicationReference") or {}).get("reference")
                tail = type_and_id(reference) if isinstance(reference, str) else None
                if tail and tail.startswith("Medication/") and tail not in record.medications:
                    medication = self._get(f"{self.base_url}/{tail}")
                    self._model(medication)
                    record.add_medication(medication)
        return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.baseline", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--base", required=True)
    parser.add_argument("--patient", action="append", required=True, metavar="ID")
    parser.add_argument("--as-of", type=date.fromisoformat, default=date(2026, 11, 26))
    parser.add_argument("--count", type=int, default=None, help="_count (default: the server's)")
    args = parser.parse_args(argv)
    screener = make_screener(Settings())
    reader = NaiveReader(args.base, args.count)
    for patient_id in args.patient:
        result = screener.screen(reader.read(patient_id), args.as_of)
        print(json.dumps(result.to_dict(), ensure_ascii=False))
    print(f"baseline: {reader.requests} requests for {len(args.patient)} patients", file=sys.stderr)
    reader.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
