"""FhirError messages: the server's OperationOutcome quoted, the request and patient named."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from service.fhir.errors import (
    MAX_OUTCOME_CHARS,
    FhirAuthError,
    FhirConflict,
    FhirError,
    FhirNetworkError,
    FhirNotFound,
    operation_outcome_text,
    status_error,
)

Wire = Callable[[str], dict[str, Any]]


def test_diagnostics_of_a_hapi_outcome_are_the_text(wire: Wire) -> None:
    outcome = wire("fhir-kit-client/patient-not-found")
    assert operation_outcome_text(outcome) == "Resource Patient/abcdefg is not known"


def test_details_text_stands_in_for_missing_diagnostics_and_issues_are_joined() -> None:
    outcome = {
        "resourceType": "OperationOutcome",
        "issue": [
            {"severity": "error", "code": "invalid", "details": {"text": "Bad date"}},
            {"severity": "error", "code": "invalid", "diagnostics": "Unknown parameter"},
        ],
    }
    assert operation_outcome_text(outcome) == "Bad date; Unknown parameter"


def test_errors_are_quoted_before_informational_issues() -> None:
    outcome = {
        "resourceType": "OperationOutcome",
        "issue": [
            {"severity": "information", "diagnostics": "Batch completed in 15ms"},
            {"severity": "error", "diagnostics": "java.lang.NullPointerException"},
        ],
    }
    assert operation_outcome_text(outcome) == "java.lang.NullPointerException"


def test_a_long_outcome_is_trimmed(wire: Wire) -> None:
    text = operation_outcome_text(wire("fhir-kit-client/unknown-resource"))
    assert text is not None
    assert text.startswith("Unknown resource type 'Foo'")
    assert len(text) <= MAX_OUTCOME_CHARS and text.endswith("…")


@pytest.mark.parametrize(
    "body", [None, "oops", {"resourceType": "Patient"}, {"resourceType": "OperationOutcome"}]
)
def test_anything_but_an_outcome_with_text_gives_none(body: Any) -> None:
    assert operation_outcome_text(body) is None


def test_the_message_says_who_said_what_about_which_request_and_patient(wire: Wire) -> None:
    error = status_error(
        404,
        "Not Found",
        body=wire("fhir-kit-client/patient-not-found"),
        request="GET Patient/abcdefg",
        patient="abcdefg",
        speaker="HAPI FHIR Server",
    )
    assert str(error) == (
        "HAPI FHIR Server said: Resource Patient/abcdefg is not known "
        "(GET Patient/abcdefg for Patient/abcdefg, HTTP 404)"
    )
    assert error.operation_outcome == wire("fhir-kit-client/patient-not-found")
    assert (error.status, error.request, error.patient) == (404, "GET Patient/abcdefg", "abcdefg")


def test_without_an_outcome_the_status_is_the_message() -> None:
    error = status_error(502, "Bad Gateway", body=None, request="GET metadata", patient=None)
    assert str(error) == "FHIR server answered 502 Bad Gateway (GET metadata, HTTP 502)"
    assert error.operation_outcome is None


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (401, FhirAuthError),
        (403, FhirAuthError),
        (404, FhirNotFound),
        (410, FhirNotFound),
        (409, FhirConflict),
        (412, FhirConflict),
        (400, FhirError),
        (422, FhirError),
    ],
)
def test_statuses_map_to_the_shallow_tree(status: int, kind: type[FhirError]) -> None:
    error = status_error(status, "", body=None, request="GET x", patient=None)
    assert type(error) is kind


@pytest.mark.parametrize(("status", "temporary"), [(503, True), (500, True), (501, False)])
def test_server_errors_are_network_errors_temporary_or_not(status: int, temporary: bool) -> None:
    error = status_error(
        status,
        "",
        body=None,
        request="GET x",
        patient=None,
        temporary_statuses=frozenset({500, 503}),
    )
    assert isinstance(error, FhirNetworkError)
    assert error.temporary is temporary
