"""A FHIR server as a source of PatientRecords: the same records LocalSource gives from files.

For one patient it asks only for what the rules read (fhir-contract.md "Reading"): the Patient,
Observations by the codes of the value sets that use them, Conditions, medication history with
the Medications it references, and Procedures. Where the server supports `batch` that is one
request; otherwise the searches run concurrently on the client's shared session. Paging follows.

Failure policy: `record()` raises the FhirError of the request that failed, naming the request and
the patient; `records()` therefore stops at the first patient that fails, and a population run
that should carry on iterates `patient_ids()` and calls `record()` for each id, recording each
failure against its patient. Gaps that do not make the record wrong but incomplete (a resource
type the server does not offer, a referenced Medication that is gone) go into `record.problems`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import ClassVar, Final
from urllib.parse import parse_qsl, quote

from service.fhir.client import FhirClient, origin_of, search_path
from service.fhir.errors import FhirBadResponse, FhirError, FhirNotFound
from service.fhir.record import (
    FOREIGN_IDS_LISTED,
    MEDICATION_USE_TYPES,
    SHARED_TYPES,
    PatientRecord,
    Resource,
    printable,
    short_reference,
    type_and_id,
)
from service.fhir.source import PopulationError as PopulationError
from service.fhir.source import fhir_ids
from service.mapping import Mappings
from service.read_plan import read_plan

log = logging.getLogger(__name__)

DEFAULT_PAGE_SIZE: Final = 100
DEFAULT_WORKERS: Final = 6  # one per search of a record


class ServerSource:
    """Reads PatientRecords from a FHIR server through a FhirClient (a
    service.fhir.source.PatientSource)."""

    is_server: ClassVar[bool] = True

    def __init__(
        self,
        client: FhirClient,
        mappings: Mappings,
        *,
        page_size: int = DEFAULT_PAGE_SIZE,
        max_workers: int = DEFAULT_WORKERS,
    ) -> None:
        self.client = client
        self.page_size = page_size
        self.max_workers = max_workers
        self.problems: list[str] = []  # a server's gaps go into each record's own problems
        self.plan = read_plan(mappings)
        # Medications fetched by id are shared by many patients: fetch each once per source.
        self._medications: dict[str, Resource] = {}

    # --- one patient ------------------------------------------------------------------------

    def searches(self, patient_id: str) -> list[tuple[str, list[tuple[str, str]]]]:
        """(resource type, search parameters) for every search of one patient's record."""
        return self.plan.searches(patient_id, self.page_size)

    def record(self, patient_id: str) -> PatientRecord:
        """Everything the rules need for one patient; raises FhirError naming what failed."""
        record = PatientRecord(patient_id)
        searches = []
        for resource_type, params in self.searches(patient_id):
            if self.client.supports_type(resource_type):
                searches.append((resource_type, params))
            else:
                record.problems.append(
                    f"the server's CapabilityStatement does not list {resource_type}, "
                    f"so no {resource_type} was read"
                )
        if self.client.supports_batch():
            patient, found = self._batched(patient_id, searches)
        else:
            patient, found = self._concurrent(patient_id, searches)
        record.add(patient)
        for resource in found:
            record.add(resource)
        if record.foreign:  # the server ignored `patient` (or worse): an operator should know
            log.warning(
                "Patient/%s: %d resource(s) in the server's answers name another patient "
                "(or none), not used: %s",
                patient_id,
                len(record.foreign),
                ", ".join(short_reference(r) for r in record.foreign[:FOREIGN_IDS_LISTED]),
            )
        self._resolve_medications(record)
        self._resolve_ingredients(record)
        log.info(
            "Patient/%s: %d resources read (%d requests so far)",
            patient_id,
            record.resource_count(),
            self.client.request_count,
        )
        return record

    def records(self, patient_ids: Iterable[str] | None = None) -> Iterator[PatientRecord]:
        """One record per id, in order; stops with the FhirError of the first patient that fails
        (see the module docstring for carrying on past failures). A server's population is
        chosen by `patient_ids()`: without ids this is a ValueError, not a read of everyone."""
        if patient_ids is None:
            raise ValueError("a FHIR server source needs the patient ids to read")
        for patient_id in patient_ids:
            yield self.record(patient_id)

    # --- populations ------------------------------------------------------------------------

    def patient_ids(
        self, search: str | None = None, group: str | None = None, ids: Iterable[str] | None = None
    ) -> Iterator[str]:
        """Patient ids from exactly one of: a Patient search ('Patient?_has:Condition:...' or
        just its query), a Group id (its Patient members), or a list of ids. Each id once; a
        string that is not a FHIR id (a newline or an escape sequence in it) is skipped with a
        warning that shows it escaped, so it never reaches a request, a log line or a terminal."""
        if sum(x is not None for x in (search, group, ids)) != 1:
            raise ValueError("give exactly one of a Patient search, a Group or a list of ids")
        if search is not None:
            found = self._ids_from_search(search)
        elif group is not None:
            found = self._ids_from_group(group)
        else:
            found = iter(ids or ())
        yield from fhir_ids(found, log)

    def _ids_from_search(self, search: str) -> Iterator[str]:
        resource_type, _, query = search.strip().rpartition("?")
        if resource_type not in ("", "Patient"):
            raise PopulationError(
                f"a population search must be a Patient search, not {printable(resource_type)}"
            )
        params = parse_qsl(query, keep_blank_values=True)
        if not any(name == "_elements" for name, _ in params):
            params.append(("_elements", "id"))  # ids are all we need: keep the pages small
        for resource in self.client.search("Patient", params):
            if resource.get("resourceType") == "Patient" and isinstance(resource.get("id"), str):
                yield resource["id"]

    def _ids_from_group(self, group: str) -> Iterator[str]:
        group_id = group.removeprefix("Group/")
        resource = self.client.read("Group", group_id)
        skipped = 0
        for member in resource.get("member") or []:
            entity = member.get("entity") if isinstance(member, dict) else None
            reference = entity.get("reference") if isinstance(entity, dict) else None
            tail = type_and_id(reference) if isinstance(reference, str) else None
            if tail and tail.startswith("Patient/") and not member.get("inactive"):
                yield tail.split("/", 1)[1]
            else:
                skipped += 1
        if skipped:
            log.warning(
                "Group/%s: %d members are not active Patients, skipped",
                printable(group_id),
                skipped,
            )

    # --- fetching ---------------------------------------------------------------------------

    def _batched(
        self, patient_id: str, searches: list[tuple[str, list[tuple[str, str]]]]
    ) -> tuple[Resource, list[Resource]]:
        """One batch for the Patient and the first page of every search; then the later pages."""
        paths = [search_path(resource_type, params) for resource_type, params in searches]
        patient_path = f"Patient/{quote(patient_id, safe='')}"
        results = self.client.batch([patient_path, *paths], patient=patient_id)
        patient = _expect_type(
            results[0], "Patient", f"GET {patient_path} (in a batch)", patient_id
        )
        found: list[Resource] = []
        for path, bundle in zip(paths, results[1:], strict=True):
            request = f"GET {path}"
            _expect_type(bundle, "Bundle", f"{request} (in a batch)", patient_id)
            found.extend(self.client.follow(bundle, request, patient_id))
        return patient, found

    def _concurrent(
        self, patient_id: str, searches: list[tuple[str, list[tuple[str, str]]]]
    ) -> tuple[Resource, list[Resource]]:
        """Every search (with its paging) in its own thread, on the client's shared session."""

        def collect(resource_type: str, params: list[tuple[str, str]]) -> list[Resource]:
            return list(self.client.search(resource_type, params, patient_id))

        with ThreadPoolExecutor(self.max_workers, thread_name_prefix="fhir-search") as pool:
            patient_future = pool.submit(self.client.read, "Patient", patient_id, patient_id)
            futures = [pool.submit(collect, *search) for search in searches]
            try:
                patient = patient_future.result()
                found = [resource for future in futures for resource in future.result()]
            except FhirError:
                pool.shutdown(wait=True, cancel_futures=True)
                raise
        return patient, found

    def _resolve_medications(self, record: PatientRecord) -> None:
        """Fetch the Medications that medication resources reference but the server did not
        include (not every server honours `_include`), so drug rules can read their codes."""
        wanted: dict[str, str] = {}  # Medication/id -> a resource that references it
        for resource_type in MEDICATION_USE_TYPES:
            for resource in record.of_type(resource_type):
                reference = _medication_reference(resource)
                if reference is None or record.resolve_medication(reference, resource):
                    continue
                tail = type_and_id(reference)
                referrer = f"{resource_type}/{printable(str(resource.get('id')))}"
                if tail is None or not tail.startswith("Medication/"):
                    record.problems.append(f"{referrer}: medication reference is not a Medication")
                else:
                    self._want(record, wanted, reference, tail, referrer, "Medication")
        self._add_fetched(record, wanted)

    def _resolve_ingredients(self, record: PatientRecord) -> None:
        """Fetch what Medications name as their ingredients by reference (a Substance, or another
        Medication): an ingredient-only Medication is recognised by them (criteria.md §4b), and
        a search's `_include` does not reach that far."""
        wanted: dict[str, str] = {}  # Type/id -> the Medication that names it
        for medication in {id(m): m for m in record.medications.values()}.values():
            ingredients = medication.get("ingredient")
            for ingredient in ingredients if isinstance(ingredients, list) else []:
                item = ingredient.get("itemReference") if isinstance(ingredient, dict) else None
                reference = item.get("reference") if isinstance(item, dict) else None
                if not isinstance(reference, str) or reference.startswith("#"):
                    continue
                if record.resolve_medication(reference, medication):
                    continue
                tail = type_and_id(reference)
                if tail is None or tail.partition("/")[0] not in SHARED_TYPES:
                    continue
                referrer = f"Medication/{printable(str(medication.get('id')))}"
                self._want(record, wanted, reference, tail, referrer, "ingredient")
        self._add_fetched(record, wanted)

    def _want(
        self,
        record: PatientRecord,
        wanted: dict[str, str],
        reference: str,
        tail: str,
        referrer: str,
        what: str,
    ) -> None:
        """Queue 'Type/id' for fetching: unless it is on another server (never asked: our
        credentials stay with the configured one) or this source fetched it already."""
        if "://" in reference and origin_of(reference) != self.client.origin:
            record.problems.append(f"{referrer}: its {what} is on another server")
        elif tail in self._medications:
            record.add_medication(self._medications[tail])
        else:
            wanted.setdefault(tail, referrer)

    def _add_fetched(self, record: PatientRecord, wanted: dict[str, str]) -> None:
        """Fetch 'Type/id' paths (each with the resource that references it) into the record's
        shared resources, remembered for the whole source."""
        if not wanted:
            return
        for tail, outcome in zip(wanted, self._fetch(list(wanted), record.patient_id), strict=True):
            if isinstance(outcome, FhirNotFound):
                record.problems.append(
                    f"{tail} (referenced by {wanted[tail]}) is not on the server"
                )
            elif isinstance(outcome, FhirError):
                raise outcome
            else:
                self._medications[tail] = outcome
                record.add_medication(outcome)

    def _fetch(self, paths: list[str], patient_id: str) -> list[Resource | FhirError]:
        """GET several 'Type/id' paths: one batch, or concurrent reads; failures in place."""
        if self.client.supports_batch():
            return self.client.batch_results(paths, patient=patient_id)

        def read(path: str) -> Resource | FhirError:
            resource_type, _, resource_id = path.partition("/")
            try:
                return self.client.read(resource_type, resource_id, patient_id)
            except FhirError as exc:
                return exc

        with ThreadPoolExecutor(self.max_workers, thread_name_prefix="fhir-read") as pool:
            futures: list[Future[Resource | FhirError]] = [pool.submit(read, p) for p in paths]
            return [future.result() for future in futures]


# --- small helpers ----------------------------------------------------------------------------


def _expect_type(resource: Resource, resource_type: str, request: str, patient_id: str) -> Resource:
    if resource.get("resourceType") != resource_type:
        raise FhirBadResponse(
            f"expected a {resource_type}, the server sent a {resource.get('resourceType')}",
            request=request,
            patient=patient_id,
        )
    return resource


def _medication_reference(resource: Resource) -> str | None:
    reference = resource.get("medicationReference")
    value = reference.get("reference") if isinstance(reference, dict) else None
    return value if isinstance(value, str) and value else None
