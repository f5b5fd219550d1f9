"""FhirClient: retries and their waits, errors that quote the server, paging, batch, writes."""

from __future__ import annotations

import gzip
import io
import json
import logging
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
import requests
import responses

from service.config import ConfigError
from service.fhir.client import (
    FhirClient,
    Location,
    etag_for,
    loggable,
    origin_of,
    parse_location,
    parse_retry_after,
    parse_status,
)
from service.fhir.errors import (
    FhirBadResponse,
    FhirConflict,
    FhirError,
    FhirNetworkError,
    FhirNotFound,
    FhirRefusedLink,
)
from service.fhir.limits import (
    AnswerLimits,
    AnswerTooLarge,
    AnswerUnreadable,
    TooDeep,
    parse_json,
    read_body,
)
from service.fhir.origin import UnsafeUrl, connect_origin
from service.fhir.redact import Secrets
from tests.builders import searchset

BASE = "https://fhir.example.org/fhir"
NOW = 1_800_000_000.0  # the conftest clock
Wire = Callable[[str], dict[str, Any]]
ClientFactory = Callable[..., FhirClient]
PATIENT = {"resourceType": "Patient", "id": "p1"}


def patients(n: int, start: int = 0) -> list[dict[str, Any]]:
    return [{"resourceType": "Patient", "id": f"p{i}"} for i in range(start, start + n)]


# --- retries -----------------------------------------------------------------------------------


def test_429_waits_as_long_as_retry_after_says(
    rsps: responses.RequestsMock, client: FhirClient, sleeps: list[float]
) -> None:
    rsps.add(responses.GET, f"{BASE}/Patient/p1", status=429, headers={"Retry-After": "7"})
    rsps.add(responses.GET, f"{BASE}/Patient/p1", json=PATIENT)
    assert client.read("Patient", "p1") == PATIENT
    assert sleeps == [7.0]
    assert client.request_count == 2


def test_retry_after_as_an_http_date_is_counted_from_now(
    rsps: responses.RequestsMock, client: FhirClient, sleeps: list[float]
) -> None:
    in_twelve_seconds = "Fri, 15 Jan 2027 08:00:12 GMT"
    assert parse_retry_after(in_twelve_seconds, NOW) == 12.0
    rsps.add(
        responses.GET, f"{BASE}/Patient/p1", status=503, headers={"Retry-After": in_twelve_seconds}
    )
    rsps.add(responses.GET, f"{BASE}/Patient/p1", json=PATIENT)
    client.read("Patient", "p1")
    assert sleeps == [12.0]


def test_retry_after_is_capped_by_max_retry_wait(
    rsps: responses.RequestsMock, make_client: ClientFactory, sleeps: list[float]
) -> None:
    rsps.add(responses.GET, f"{BASE}/Patient/p1", status=429, headers={"Retry-After": "3600"})
    rsps.add(responses.GET, f"{BASE}/Patient/p1", json=PATIENT)
    make_client(max_retry_wait=20.0).read("Patient", "p1")
    assert sleeps == [20.0]


def test_503_then_success_backs_off_exponentially(
    rsps: responses.RequestsMock, client: FhirClient, sleeps: list[float]
) -> None:
    for _ in range(3):
        rsps.add(responses.GET, f"{BASE}/Patient/p1", status=503)
    rsps.add(responses.GET, f"{BASE}/Patient/p1", json=PATIENT)
    assert client.read("Patient", "p1") == PATIENT
    assert sleeps == [0.5, 1.0, 2.0]


def test_retries_exhausted_raise_a_temporary_error_with_the_last_status(
    rsps: responses.RequestsMock, make_client: ClientFactory, sleeps: list[float]
) -> None:
    rsps.add(responses.GET, f"{BASE}/Patient/p1", status=503)
    client = make_client(retries=2)
    with pytest.raises(FhirNetworkError) as caught:
        client.read("Patient", "p1", patient="p1")
    assert caught.value.temporary and caught.value.status == 503
    assert "(GET Patient/p1 for Patient/p1, HTTP 503)" in str(caught.value)
    assert client.request_count == 3 and sleeps == [0.5, 1.0]


def test_a_read_timeout_is_retried(
    rsps: responses.RequestsMock, client: FhirClient, sleeps: list[float]
) -> None:
    rsps.add(responses.GET, f"{BASE}/Patient/p1", body=requests.ReadTimeout("read timed out"))
    rsps.add(responses.GET, f"{BASE}/Patient/p1", json=PATIENT)
    assert client.read("Patient", "p1") == PATIENT
    assert sleeps == [0.5]


def test_timeouts_exhausted_give_a_temporary_network_error(
    rsps: responses.RequestsMock, client: FhirClient, sleeps: list[float]
) -> None:
    rsps.add(responses.GET, f"{BASE}/Patient/p1", body=requests.ReadTimeout("read timed out"))
    with pytest.raises(FhirNetworkError) as caught:
        client.read("Patient", "p1", patient="p1")
    assert caught.value.temporary
    assert str(caught.value) == (
        "no answer from the FHIR server after 5 attempts: read timeout "
        "(GET Patient/p1 for Patient/p1)"
    )
    assert client.request_count == 5 and len(sleeps) == 4


def test_a_certificate_failure_is_not_retried(
    rsps: responses.RequestsMock, client: FhirClient, sleeps: list[float]
) -> None:
    rsps.add(responses.GET, f"{BASE}/metadata", body=requests.exceptions.SSLError("bad cert"))
    with pytest.raises(FhirNetworkError) as caught:
        client.capabilities()
    assert not caught.value.temporary and "CA bundle" in str(caught.value)
    assert sleeps == []


def test_a_plain_create_is_not_repeated_after_a_read_timeout(
    rsps: responses.RequestsMock, client: FhirClient, sleeps: list[float]
) -> None:
    rsps.add(responses.POST, f"{BASE}/Provenance", body=requests.ReadTimeout("read timed out"))
    with pytest.raises(FhirNetworkError):
        client.create({"resourceType": "Provenance"})
    assert client.request_count == 1 and sleeps == []


def test_a_plain_create_is_not_repeated_after_a_502_but_is_after_a_429(
    rsps: responses.RequestsMock, client: FhirClient
) -> None:
    rsps.add(responses.POST, f"{BASE}/Provenance", status=502)
    with pytest.raises(FhirNetworkError):
        client.create({"resourceType": "Provenance"})
    assert client.request_count == 1
    rsps.replace(responses.POST, f"{BASE}/Provenance", status=429)
    rsps.add(responses.POST, f"{BASE}/Provenance", status=201, json={"resourceType": "Provenance"})
    assert client.create({"resourceType": "Provenance"}).status == 201
    assert client.request_count == 3


def test_a_conditional_create_is_repeated_after_a_timeout(
    rsps: responses.RequestsMock, client: FhirClient
) -> None:
    rsps.add(responses.POST, f"{BASE}/ResearchStudy", body=requests.ReadTimeout("read timed out"))
    rsps.add(
        responses.POST, f"{BASE}/ResearchStudy", status=200, json={"resourceType": "ResearchStudy"}
    )
    result = client.create(
        {"resourceType": "ResearchStudy"},
        if_none_exist="identifier=https://clinicaltrials.gov|NCT06585007",
    )
    assert result.status == 200
    assert rsps.calls[1].request.headers["If-None-Exist"] == (
        "identifier=https://clinicaltrials.gov|NCT06585007"
    )


@pytest.mark.parametrize(
    ("entries", "attempts"),
    [
        ([{"request": {"method": "PUT", "url": "ResearchSubject?identifier=s|1"}}], 2),
        (
            [
                {"request": {"method": "PUT", "url": "ResearchSubject?identifier=s|1"}},
                {"request": {"method": "POST", "url": "Provenance"}},
            ],
            1,
        ),
        (
            [
                {"request": {"method": "PUT", "url": "ResearchSubject?identifier=s|1"}},
                {"request": {"method": "POST", "url": "Provenance", "ifNoneExist": "x=1"}},
            ],
            2,
        ),
    ],
    ids=["conditional-put", "plus-plain-post", "plus-conditional-post"],
)
def test_a_transaction_is_repeated_after_a_timeout_only_when_all_entries_are_idempotent(
    rsps: responses.RequestsMock, client: FhirClient, entries: list[Any], attempts: int
) -> None:
    answer = {"resourceType": "Bundle", "type": "transaction-response", "entry": []}
    rsps.add(responses.POST, BASE, body=requests.ReadTimeout("read timed out"))
    rsps.add(responses.POST, BASE, json=answer)
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
    if attempts == 1:
        with pytest.raises(FhirNetworkError):
            client.transaction(bundle)
    else:
        assert client.transaction(bundle) == answer
    assert client.request_count == attempts


# --- errors that quote the server ---------------------------------------------------------------


def test_404_quotes_hapi_and_is_not_retried(
    rsps: responses.RequestsMock, client: FhirClient, sleeps: list[float], wire: Wire
) -> None:
    not_found = wire("fhir-kit-client/patient-not-found")
    rsps.add(responses.GET, f"{BASE}/Patient/abcdefg", status=404, json=not_found)
    with pytest.raises(FhirNotFound) as caught:
        client.read("Patient", "abcdefg", patient="abcdefg")
    assert str(caught.value) == (
        "FHIR server said: Resource Patient/abcdefg is not known "
        "(GET Patient/abcdefg for Patient/abcdefg, HTTP 404)"
    )
    assert client.request_count == 1 and sleeps == []


def test_the_server_is_named_once_its_capabilities_are_known(
    rsps: responses.RequestsMock, client: FhirClient, wire: Wire
) -> None:
    rsps.add(
        responses.GET, f"{BASE}/metadata", json=wire("fhir-kit-client/valid-capability-statement")
    )
    rsps.add(
        responses.GET,
        f"{BASE}/Patient/eb3271e1-ae1b-4644-9332-41e32c829486/_history/2",
        status=404,
        json=wire("fhir-kit-client/patient-version-not-found"),
    )
    client.capabilities()
    with pytest.raises(FhirNotFound) as caught:
        client.vread("Patient", "eb3271e1-ae1b-4644-9332-41e32c829486", "2")
    assert str(caught.value).startswith('HAPI FHIR Server said: Version "2" is not valid')


def test_400_quotes_the_outcome_trimmed_and_is_not_retried(
    rsps: responses.RequestsMock, client: FhirClient, sleeps: list[float], wire: Wire
) -> None:
    rsps.add(
        responses.GET, f"{BASE}/Foo", status=400, json=wire("fhir-kit-client/unknown-resource")
    )
    with pytest.raises(FhirError) as caught:
        list(client.search("Foo", {"name": "x"}))
    message = str(caught.value)
    assert type(caught.value) is FhirError and caught.value.status == 400
    assert message.startswith("FHIR server said: Unknown resource type 'Foo' - Server knows")
    assert message.endswith("… (GET Foo?name=x, HTTP 400)")
    assert sleeps == []


def test_412_is_a_conflict_quoting_details_text(
    rsps: responses.RequestsMock, client: FhirClient
) -> None:
    outcome = {
        "resourceType": "OperationOutcome",
        "issue": [
            {
                "severity": "error",
                "code": "conflict",
                "details": {"text": "HAPI-0550: Resource version 2 does not match If-Match 1"},
            }
        ],
    }
    rsps.add(responses.PUT, f"{BASE}/ResearchSubject/s1", status=412, json=outcome)
    subject = {"resourceType": "ResearchSubject", "id": "s1"}
    with pytest.raises(FhirConflict) as caught:
        client.update(subject, if_match=etag_for("1"), patient="p1")
    assert str(caught.value) == (
        "FHIR server said: HAPI-0550: Resource version 2 does not match If-Match 1 "
        "(PUT ResearchSubject/s1 for Patient/p1, HTTP 412)"
    )
    assert rsps.calls[0].request.headers["If-Match"] == 'W/"1"'
    assert client.request_count == 1


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ("<html><body>Gateway login</body></html>", "not valid JSON"),
        ('{"resourceType": "Patient", "id": ', "not valid JSON"),
        ("[1, 2]", "not a FHIR resource"),
        ('{"id": "p1"}', "not a FHIR resource"),
    ],
)
def test_a_body_that_is_not_fhir_json_is_a_bad_response_naming_the_request(
    rsps: responses.RequestsMock, client: FhirClient, body: str, why: str
) -> None:
    rsps.add(responses.GET, f"{BASE}/Patient/p1", body=body, status=200)
    with pytest.raises(FhirBadResponse) as caught:
        client.read("Patient", "p1", patient="p1")
    assert why in str(caught.value)
    assert "(GET Patient/p1 for Patient/p1, HTTP 200)" in str(caught.value)
    assert "Gateway login" not in str(caught.value)


def test_a_resource_of_the_wrong_type_is_a_bad_response(
    rsps: responses.RequestsMock, client: FhirClient
) -> None:
    rsps.add(responses.GET, f"{BASE}/Patient/p1", json={"resourceType": "Bundle"})
    with pytest.raises(FhirBadResponse, match="expected a Patient, the server sent a Bundle"):
        client.read("Patient", "p1")


# --- transport settings -------------------------------------------------------------------------


def test_every_request_has_a_timeout_tls_verification_and_our_user_agent(
    rsps: responses.RequestsMock, client: FhirClient
) -> None:
    rsps.add(responses.GET, f"{BASE}/Patient/p1", json=PATIENT)
    rsps.add(
        responses.POST, BASE, json={"resourceType": "Bundle", "type": "batch-response", "entry": []}
    )
    client.read("Patient", "p1")
    client.transaction({"resourceType": "Bundle", "type": "transaction", "entry": []})
    for call in rsps.calls:
        kwargs = call.request.req_kwargs  # type: ignore[attr-defined]  # recorded by responses
        assert kwargs["timeout"] == (5.0, 30.0)
        assert kwargs["verify"]  # True, or the CA bundle the environment names: never off
        assert call.request.headers["User-Agent"].startswith("medcare-screen/")
        assert call.request.headers["Accept"] == "application/fhir+json"


def test_a_configured_ca_bundle_wins_over_the_environment(
    rsps: responses.RequestsMock,
    make_client: ClientFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bundle = tmp_path / "hospital-ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    rsps.add(responses.GET, f"{BASE}/Patient/p1", json=PATIENT)
    make_client(verify=bundle).read("Patient", "p1")
    sent = rsps.calls[0].request.req_kwargs  # type: ignore[attr-defined]  # recorded by responses
    assert sent["verify"] == str(bundle)


def test_a_missing_ca_bundle_is_a_configuration_error(
    make_client: ClientFactory, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match="MEDCARE_TLS_CA_BUNDLE"):
        make_client(verify=tmp_path / "absent.pem")


def test_turning_verification_off_is_never_silent(
    make_client: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        make_client(verify=False)
    assert "TLS certificate verification is OFF" in caplog.text


def test_capabilities_are_fetched_once(
    rsps: responses.RequestsMock, client: FhirClient, wire: Wire
) -> None:
    rsps.add(
        responses.GET, f"{BASE}/metadata", json=wire("fhir-kit-client/valid-capability-statement")
    )
    assert client.supports_batch()
    assert client.supports_type("Patient") and not client.supports_type("MedicationAdministration")
    assert client.request_count == 1


def test_a_statement_without_batch_or_resource_lists(
    rsps: responses.RequestsMock, client: FhirClient, wire: Wire
) -> None:
    rsps.add(responses.GET, f"{BASE}/metadata", json=wire("fhir-data-pipes/fhir-metadata-sample"))
    assert not client.declares_batch()
    assert client.supports_batch()  # auto: the first batch is a probe, declared or not
    assert client.batch_mode == "not decided yet"
    assert client.supports_type("MedicationAdministration")  # nothing listed: not an omission


def test_the_batch_setting_overrides_the_statement(
    rsps: responses.RequestsMock, make_client: ClientFactory, wire: Wire
) -> None:
    rsps.add(responses.GET, f"{BASE}/metadata", json=wire("fhir-data-pipes/fhir-metadata-sample"))
    always = make_client(batch="always")
    assert always.supports_batch() and always.request_count == 0  # no need to ask
    assert (always.batch_mode, always.batch_mode_reason) == ("batch", "MEDCARE_FHIR_BATCH=always")
    rsps.replace(
        responses.GET, f"{BASE}/metadata", json=wire("fhir-kit-client/valid-capability-statement")
    )
    never = make_client(batch="never")
    assert not never.supports_batch()
    assert never.batch_mode == "concurrent searches"
    assert make_client(batch="auto").supports_batch()
    with pytest.raises(ValueError, match="batch: expected one of auto, always, never"):
        make_client(batch="sometimes")


# --- paging -------------------------------------------------------------------------------------


def _on_our_host(bundle: dict[str, Any]) -> dict[str, Any]:
    """A hapi-wire page with its links moved from example.com to the test server."""
    rewritten: dict[str, Any] = json.loads(json.dumps(bundle).replace("https://example.com", BASE))
    return rewritten


def test_paging_follows_hapi_getpages_links(
    rsps: responses.RequestsMock, client: FhirClient, wire: Wire
) -> None:
    page1 = _on_our_host(wire("fhir-kit-client/search-results-page-1"))
    page2 = _on_our_host(wire("fhir-kit-client/search-results-page-2"))
    page2["link"] = [link for link in page2["link"] if link["relation"] != "next"]  # last page
    rsps.add(responses.GET, f"{BASE}/Patient", json=page1)
    rsps.add(responses.GET, f"{BASE}/", json=page2)
    found = list(client.search("Patient", {"gender": "female", "_count": "3"}))
    expected = [e["resource"]["id"] for e in page1["entry"] + page2["entry"]]
    assert [r["id"] for r in found] == expected and len(expected) == 6
    assert "_getpages=678cd733-8823-4324-88a7-51d369cf78a9&_getpagesoffset=3" in str(
        rsps.calls[1].request.url
    )
    assert client.request_count == 2


def _two_pages(
    rsps: responses.RequestsMock,
    first: list[dict[str, Any]],
    next_url: str,
    second_url: str,
    second_query: dict[str, str],
    second_next: str | None = None,
) -> None:
    """A search for men answered in two pages: `first` with a next link to `next_url`, then the
    one patient after them, at `second_url` asked with `second_query` (and its own next link)."""
    rsps.add(
        responses.GET,
        f"{BASE}/Patient",
        json=searchset(*first, next_url=next_url),
        match=[responses.matchers.query_param_matcher({"gender": "male"})],
    )
    rsps.add(
        responses.GET,
        second_url,
        json=searchset(*patients(1, start=len(first)), next_url=second_next),
        match=[responses.matchers.query_param_matcher(second_query)],
    )


def test_paging_follows_relative_offset_links(
    rsps: responses.RequestsMock, client: FhirClient
) -> None:
    _two_pages(rsps, patients(2), "Patient?_offset=2", f"{BASE}/Patient", {"_offset": "2"})
    found = list(client.search("Patient", [("gender", "male")]))
    assert [r["id"] for r in found] == ["p0", "p1", "p2"]


@pytest.mark.parametrize(
    "elsewhere",
    [
        "https://evil.example.net/fhir/Patient?page=2",
        "http://fhir.example.org/fhir/Patient?page=2",
        "https://fhir.example.org:8443/fhir/Patient?page=2",
    ],
    ids=["other-host", "other-scheme", "other-port"],
)
def test_a_next_link_to_another_origin_is_refused(
    rsps: responses.RequestsMock, client: FhirClient, elsewhere: str
) -> None:
    rsps.add(responses.GET, f"{BASE}/Patient", json=searchset(*patients(1), next_url=elsewhere))
    found: list[dict[str, Any]] = []
    with pytest.raises(FhirRefusedLink) as caught:
        found.extend(client.search("Patient", {"gender": "male"}, patient=None))
    message = str(caught.value)
    assert "https://fhir.example.org:443" in message
    assert message.split("next link to ")[1].split(":")[0] in elsewhere
    assert [r["id"] for r in found] == ["p0"]  # the first page was ours and is kept
    assert len(rsps.calls) == 1


def test_the_default_port_and_host_case_are_the_same_origin(
    rsps: responses.RequestsMock, client: FhirClient
) -> None:
    page2 = "https://FHIR.example.org:443/fhir/Patient?page=2"
    _two_pages(rsps, patients(1), page2, "https://fhir.example.org:443/fhir/Patient", {"page": "2"})
    assert [r["id"] for r in client.search("Patient", {"gender": "male"})] == ["p0", "p1"]


def test_a_repeating_next_link_stops_paging_with_a_warning(
    rsps: responses.RequestsMock, client: FhirClient, caplog: pytest.LogCaptureFixture
) -> None:
    again = f"{BASE}/Patient?page=2"
    _two_pages(rsps, patients(1), again, again, {"page": "2"}, second_next=again)
    with caplog.at_level(logging.WARNING):
        found = list(client.search("Patient", {"gender": "male"}))
    assert [r["id"] for r in found] == ["p0", "p1"]
    assert client.request_count == 2
    assert "repeated a next link" in caplog.text


def test_search_yields_matches_and_includes_but_not_outcomes(
    rsps: responses.RequestsMock, client: FhirClient
) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [
            {
                "resource": {"resourceType": "MedicationRequest", "id": "r1"},
                "search": {"mode": "match"},
            },
            {"resource": {"resourceType": "Medication", "id": "m1"}, "search": {"mode": "include"}},
            {"resource": {"resourceType": "Procedure", "id": "x1"}},
            {
                "resource": {"resourceType": "OperationOutcome", "issue": []},
                "search": {"mode": "outcome"},
            },
        ],
    }
    rsps.add(responses.GET, f"{BASE}/MedicationRequest", json=bundle)
    found = list(client.search("MedicationRequest", {"patient": "p1"}))
    assert [f"{r['resourceType']}/{r['id']}" for r in found] == [
        "MedicationRequest/r1",
        "Medication/m1",
        "Procedure/x1",
    ]


def test_search_parameters_keep_fhir_token_syntax_readable(
    rsps: responses.RequestsMock, client: FhirClient
) -> None:
    rsps.add(
        responses.GET, f"{BASE}/Observation", status=500, json={"resourceType": "OperationOutcome"}
    )
    codes = "http://loinc.org|2986-8,http://loinc.org|89247-1"
    with pytest.raises(FhirNetworkError) as caught:
        list(client.search("Observation", [("patient", "p 1"), ("code", codes)], patient="p 1"))
    assert caught.value.request == f"GET Observation?patient=p 1&code={codes}"
    sent = rsps.calls[0].request.url or ""
    assert "patient=p%201" in sent


# --- batch --------------------------------------------------------------------------------------


def test_batch_sends_one_bundle_of_gets_and_maps_hapi_entry_errors(
    rsps: responses.RequestsMock, client: FhirClient, wire: Wire
) -> None:
    rsps.add(responses.POST, BASE, json=wire("fhir-kit-client/batch-error-results"))
    urls = ["Patient/a", "Patient/b", "Patient/non-existent-patient", "Patient?name=missing-name"]
    results = client.batch_results(urls, patient="p9")
    sent = json.loads(rsps.calls[0].request.body or b"")
    assert sent["type"] == "batch"
    assert [e["request"] for e in sent["entry"]] == [{"method": "GET", "url": u} for u in urls]
    first, _, missing, bundle = results
    assert isinstance(first, FhirNetworkError) and first.status == 500
    assert isinstance(missing, FhirNotFound)
    assert str(missing) == (
        "FHIR server said: Resource Patient/non-existent-patient is not known "
        "(GET Patient/non-existent-patient (in a batch) for Patient/p9, HTTP 404)"
    )
    assert isinstance(bundle, dict) and bundle["type"] == "searchset"
    assert client.request_count == 1


def test_batch_raises_the_first_failed_entry(
    rsps: responses.RequestsMock, client: FhirClient
) -> None:
    outcome = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "not-found", "diagnostics": "Not found"}],
    }
    answer = {
        "resourceType": "Bundle",
        "type": "batch-response",
        "entry": [
            {"resource": PATIENT, "response": {"status": "200"}},
            {"response": {"status": "404", "outcome": outcome}},
        ],
    }
    rsps.add(responses.POST, BASE, json=answer)
    with pytest.raises(FhirNotFound) as caught:
        client.batch(["Patient/p1", "Medication/gone"], patient="p1")
    assert caught.value.request == "GET Medication/gone (in a batch)"
    assert caught.value.operation_outcome == outcome


def test_a_batch_answer_with_the_wrong_number_of_entries_is_a_bad_response(
    rsps: responses.RequestsMock, client: FhirClient
) -> None:
    rsps.add(
        responses.POST, BASE, json={"resourceType": "Bundle", "type": "batch-response", "entry": []}
    )
    with pytest.raises(FhirBadResponse, match="0 entries for 2 requests"):
        client.batch(["Patient/a", "Patient/b"])


# --- writes and what they answer ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "expected"), [("201 Created", 201), ("201", 201), ("200 OK", 200), ("Created", None)]
)
def test_entry_statuses_parse_with_or_without_reason(status: str, expected: int | None) -> None:
    assert parse_status(status) == expected


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        ("Patient/152752/_history/1", Location("Patient", "152752", "1")),
        (f"{BASE}/ResearchSubject/42/_history/3", Location("ResearchSubject", "42", "3")),
        ("ResearchStudy/7", Location("ResearchStudy", "7", None)),
        (
            "https://api.medplum.com/fhir/R4/Provenance/0b8c5d2e-4c8e-4f7a-9f1d-1a2b3c4d5e6f/_history/"
            "7f3e2d1c-aaaa-bbbb-cccc-123456789abc",
            Location(
                "Provenance",
                "0b8c5d2e-4c8e-4f7a-9f1d-1a2b3c4d5e6f",
                "7f3e2d1c-aaaa-bbbb-cccc-123456789abc",
            ),
        ),
    ],
)
def test_locations_parse_absolute_or_relative_with_or_without_history(
    location: str, expected: Location
) -> None:
    assert parse_location(location) == expected


def test_create_returns_resource_status_location_and_etag(
    rsps: responses.RequestsMock, client: FhirClient
) -> None:
    created = {"resourceType": "ResearchStudy", "id": "7", "meta": {"versionId": "1"}}
    rsps.add(
        responses.POST,
        f"{BASE}/ResearchStudy",
        status=201,
        json=created,
        headers={"Location": f"{BASE}/ResearchStudy/7/_history/1", "ETag": 'W/"1"'},
    )
    result = client.create({"resourceType": "ResearchStudy"})
    assert result.version_id == "1"
    assert tuple(result) == (created, 201, f"{BASE}/ResearchStudy/7/_history/1", 'W/"1"')
    assert rsps.calls[0].request.headers["Content-Type"] == "application/fhir+json"


def test_an_update_answered_with_an_outcome_only_still_gives_the_version(
    rsps: responses.RequestsMock, client: FhirClient, wire: Wire
) -> None:
    rsps.add(
        responses.PUT,
        f"{BASE}/ResearchSubject",
        status=200,
        json=wire("fhir-kit-client/patient-created"),
        headers={"ETag": 'W/"4"'},
    )
    result = client.update(
        {"resourceType": "ResearchSubject"}, conditional="identifier=https://x|p1"
    )
    assert result.resource is None and result.version_id == "4"
    assert (
        unquote(rsps.calls[0].request.url or "")
        == f"{BASE}/ResearchSubject?identifier=https://x|p1"
    )


def test_a_transaction_failure_quotes_the_outcome(
    rsps: responses.RequestsMock, client: FhirClient, wire: Wire
) -> None:
    rsps.add(
        responses.POST, BASE, status=400, json=wire("fhir-kit-client/transaction-error-response")
    )
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"request": {"method": "PUT", "url": "ResearchSubject?identifier=s|1"}}],
    }
    with pytest.raises(FhirError) as caught:
        client.transaction(bundle, patient="p1")
    assert str(caught.value) == (
        "FHIR server said: Resource Patient/non-existent-patient is not known "
        "(POST transaction of 1 entries for Patient/p1, HTTP 400)"
    )


# --- origins as requests connects (issue 10 item 1) ---------------------------------------------


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("https://fhir.example.org/fhir", "https://fhir.example.org:443"),
        ("HTTPS://FHIR.Example.ORG:443/fhir", "https://fhir.example.org:443"),
        ("http://127.0.0.1/fhir", "http://127.0.0.1:80"),
        ("https://bücher.example/fhir", "https://xn--bcher-kva.example:443"),  # IDNA, as sent
        ("http://[::1]:8080/fhir", "http://[::1]:8080"),
        ("http://127.0.0.1:8080#@evil.example/x", "http://127.0.0.1:8080"),  # a fragment
    ],
)
def test_connect_origin_is_where_requests_connects(url: str, origin: str) -> None:
    assert connect_origin(url) == origin
    assert origin_of(url) == origin


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.2:9000\\@127.0.0.1:8000/fhir/x",  # urllib.parse: .1; requests: .2
        "http://user:pw@fhir.example.org/fhir",
        "http://fhir.example.org%2F@evil.example/fhir",
        "http://fhir.example.org;@evil.example/fhir",
        "ftp://fhir.example.org/fhir",
        "http://evil\t.example/fhir",
    ],
    ids=["backslash", "userinfo", "encoded-slash", "semicolon", "scheme", "control-character"],
)
def test_ambiguous_or_credentialed_urls_have_no_origin(url: str) -> None:
    with pytest.raises(UnsafeUrl):
        connect_origin(url)
    assert origin_of(url) == "unsafe:"


def test_a_base_url_with_userinfo_is_a_configuration_error() -> None:
    with pytest.raises(ConfigError, match="the FHIR base URL is not usable"):
        FhirClient("https://user:secret@fhir.example.org/fhir")


# --- secrets, limits and log lines (issue 10 items 6, 8, 14) ------------------------------------


def test_secrets_are_learned_from_the_authorization_header_sent() -> None:
    secrets = Secrets()
    secrets.learn_authorization(requests.auth._basic_auth_str("screener", "pa55-word"))
    secrets.learn_authorization("Bearer tok-123456")
    text = "user screener:pa55-word, password pa55-word, token tok-123456, ok"
    assert secrets.scrub(text) == "user ***, password ***, token ***, ok"
    assert secrets.scrub("pa55-word%21") == "***%21"
    secrets.learn_authorization("Bearer abc")  # too short to be told from ordinary text
    assert secrets.scrub("abc") == "abc"


def test_a_redacted_error_keeps_its_shape() -> None:
    secrets = Secrets("tok-123456")
    outcome = {"resourceType": "OperationOutcome", "issue": [{"diagnostics": "bad tok-123456"}]}
    error = secrets.scrub_error(
        FhirError("said tok-123456", request="GET x", patient="p1", operation_outcome=outcome)
    )
    assert str(error) == "said *** (GET x for Patient/p1)" and error.args == (str(error),)
    assert error.operation_outcome == {
        "resourceType": "OperationOutcome",
        "issue": [{"diagnostics": "bad ***"}],
    }


def test_gzip_members_and_deflate_are_read_in_bounded_pieces() -> None:
    data = b'{"resourceType": "Bundle"}' + b" " * 3_000_000

    class Raw:
        def __init__(self, body: bytes) -> None:
            self.body = io.BytesIO(body)

        def read1(self, amt: int | None = None, decode_content: bool | None = None) -> bytes:
            assert decode_content is False  # we decompress, with a bound
            return self.body.read(1000)

    two_members = gzip.compress(data[:10]) + gzip.compress(data[10:])
    assert read_body(Raw(two_members), {"Content-Encoding": "gzip"}, AnswerLimits(), 1e18) == data
    deflated = zlib.compress(data)
    assert read_body(Raw(deflated), {"Content-Encoding": "deflate"}, AnswerLimits(), 1e18) == data
    with pytest.raises(AnswerTooLarge):
        read_body(Raw(deflated), {"Content-Encoding": "deflate"}, AnswerLimits(2_999_999), 1e18)
    with pytest.raises(AnswerUnreadable):
        read_body(Raw(deflated), {"Content-Encoding": "br"}, AnswerLimits(), 1e18)


def test_json_depth_is_bounded_without_recursion() -> None:
    assert parse_json(b'{"a": [{"b": [1]}]}', max_depth=4) == {"a": [{"b": [1]}]}
    with pytest.raises(TooDeep):
        parse_json(b'{"a": [{"b": [1]}]}', max_depth=3)
    with pytest.raises(TooDeep):
        parse_json(b"[" * 100_000 + b"]" * 100_000)


def test_log_lines_name_parameters_not_values() -> None:
    assert loggable("GET Patient?name=Smith&birthdate=1950-01-01") == (
        "GET Patient?name=…&birthdate=…"
    )
    assert loggable("POST batch of 7 GET requests") == "POST batch of 7 GET requests"
