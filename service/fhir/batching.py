"""Reading many URLs at once: one `batch` of GETs, or the same GETs one by one when refused.

A failed entry is returned as its FhirError, in its place, so one missing Medication does not
hide the others. With MEDCARE_FHIR_BATCH=auto the first batch is a probe (batch_mode.py): a
server that refuses it is read with concurrent searches from then on, and the patient whose
batch was refused is still read, one GET each.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final

from service.fhir.batch_mode import BatchMode
from service.fhir.errors import (
    FhirAuthError,
    FhirBadResponse,
    FhirError,
    FhirNetworkError,
    FhirRefusedLink,
)
from service.fhir.http_parse import Resource, as_object, parse_resource, parse_status
from service.fhir.transport import Transport

log = logging.getLogger(__name__)

# Concurrent GETs when a probe batch was refused and its requests are made one by one.
SEPARATE_WORKERS: Final = 6


def batch_results(
    http: Transport,
    mode: BatchMode,
    requests_: Sequence[str],
    patient: str | None,
    declared: Callable[[], bool | None],
) -> list[Resource | FhirError]:
    """FhirClient.batch_results (which says the rules); `declared` is whether the server's
    CapabilityStatement lists batch, None when it has not been read (the probe's reason says)."""
    if not requests_:
        return []
    if not mode.probing:
        return _batch_results(http, requests_, patient)
    try:
        results = _batch_results(http, requests_, patient)
    except FhirError as exc:
        if not _refuses_batch(exc):
            raise
        mode.refused(exc.summary)
        log.warning("the FHIR server refused a batch: reading with concurrent searches")
        return _separately(http, requests_, patient)
    mode.kept(declared())
    return results


class _NotABatchResponse(FhirBadResponse):
    """A 2xx answer to a batch that is not a batch-response: the server does not do batch."""


def _batch_results(
    http: Transport, requests_: Sequence[str], patient: str | None
) -> list[Resource | FhirError]:
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [{"request": {"method": "GET", "url": url}} for url in requests_],
    }
    request = f"POST batch of {len(requests_)} GET requests"
    response = http.send_json("POST", "", bundle, request, patient, idempotent=True)
    answer = parse_resource(response, request, patient)
    if answer is None or answer["resourceType"] != "Bundle":
        sent = answer["resourceType"] if answer else "an empty body"
        raise http.answer_error(
            _NotABatchResponse,
            f"expected a batch-response Bundle, the server sent {sent}",
            response,
            request,
            patient,
        )
    entries = _response_entries(answer, len(requests_), request, patient)
    return [
        _entry_result(http, entry, f"GET {url} (in a batch)", patient)
        for url, entry in zip(requests_, entries, strict=True)
    ]


def _separately(
    http: Transport, requests_: Sequence[str], patient: str | None
) -> list[Resource | FhirError]:
    """What a batch of these GETs would have given, one request each (concurrently)."""

    def get(url: str) -> Resource | FhirError:
        try:
            return http.get(url, patient, _expected_type(url))
        except FhirError as exc:
            return exc

    workers = min(len(requests_), SEPARATE_WORKERS)
    with ThreadPoolExecutor(workers, thread_name_prefix="fhir-get") as pool:
        return list(pool.map(get, requests_))


def _entry_result(
    http: Transport, entry: dict[str, Any], request: str, patient: str | None
) -> Resource | FhirError:
    answer = as_object(entry.get("response"))
    status = parse_status(answer.get("status"))
    resource = entry.get("resource")
    if status is None:
        return FhirBadResponse(
            "a batch entry has no readable response.status", request=request, patient=patient
        )
    if 200 <= status < 300:
        if isinstance(resource, dict) and isinstance(resource.get("resourceType"), str):
            return resource
        return FhirBadResponse(
            "a successful batch entry carries no resource",
            status=status,
            request=request,
            patient=patient,
        )
    outcome = answer.get("outcome") or resource
    reason = str(answer.get("status")).partition(" ")[2]
    return http.status_error(status, reason, outcome, request, patient)


def _refuses_batch(exc: FhirError) -> bool:
    """Whether a failed probe batch means "this server does not do batch": an error status that
    is neither "try again later" (temporary) nor "who are you" (401), or a 2xx answer of another
    shape. Broken or oversized answers and refused links decide nothing."""
    if isinstance(exc, _NotABatchResponse):
        return True
    if exc.status is None or exc.status < 400 or isinstance(exc, FhirRefusedLink):
        return False
    if isinstance(exc, FhirNetworkError) and exc.temporary:
        return False
    return not (isinstance(exc, FhirAuthError) and exc.status == 401)


def _expected_type(url: str) -> str:
    """The resource type a relative GET of a batch entry answers: a Bundle for a search."""
    path, sep, _ = url.partition("?")
    resource_type, slash, _ = path.partition("/")
    return resource_type if slash and not sep else "Bundle"


def _response_entries(
    answer: Resource, expected: int, request: str, patient: str | None
) -> list[dict[str, Any]]:
    """The batch-response entries, one per request in order.

    Some HAPI versions put an informational OperationOutcome ("Batch completed in 15ms") first,
    without a `response`; it is dropped so positions line up with the requests again.
    """
    entries = [entry for entry in answer.get("entry") or [] if isinstance(entry, dict)]
    if len(entries) == expected + 1 and "response" not in entries[0]:
        entries = entries[1:]
    if len(entries) != expected:
        raise FhirBadResponse(
            f"the batch response has {len(entries)} entries for {expected} requests",
            request=request,
            patient=patient,
        )
    return entries
