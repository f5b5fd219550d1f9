"""ServerSource: one batch per patient (or concurrent searches), paging, Medications, populations."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

import pytest
import responses
from requests import PreparedRequest

from service.fhir.client import FhirClient
from service.fhir.errors import FhirNetworkError, FhirNotFound
from service.fhir.server_source import ServerSource
from service.mapping import Mappings
from service.mapping.model import ValueSet
from service.read_plan import observation_search_codes as observation_codes
from service.read_plan import search_pairs

BASE = "https://fhir.example.org/fhir"
LOINC = "http://loinc.org"
SCREENING = "https://medcare-screen.org/fhir/CodeSystem/screening"
SEARCHED = ("Observation", "Condition", "MedicationStatement", "MedicationRequest",
            "MedicationAdministration", "Procedure")  # fmt: skip
ALL_TYPES = ("Patient", *SEARCHED, "Medication", "Group")
Wire = Callable[[str], dict[str, Any]]
ClientFactory = Callable[..., FhirClient]
PATIENT = {"resourceType": "Patient", "id": "p1", "gender": "male"}


def capability(*, batch: bool = True, types: tuple[str, ...] = ALL_TYPES) -> dict[str, Any]:
    rest: dict[str, Any] = {"mode": "server", "resource": [{"type": t} for t in types]}
    if batch:
        rest["interaction"] = [{"code": "batch"}, {"code": "transaction"}]
    return {"resourceType": "CapabilityStatement", "status": "active", "rest": [rest]}


def searchset(*resources: dict[str, Any], next_url: str | None = None) -> dict[str, Any]:
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [
            {
                "resource": r,
                "search": {"mode": "include" if r["resourceType"] == "Medication" else "match"},
            }
            for r in resources
        ],
    }
    if next_url:
        bundle["link"] = [{"relation": "next", "url": next_url}]
    return bundle


def batch_response(*entries: tuple[str, dict[str, Any]]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "batch-response",
        "entry": [
            {"resource": resource, "response": {"status": status}} for status, resource in entries
        ],
    }


def observation(oid: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": "2986-8"}]},
        "subject": {"reference": "Patient/p1"},
    }


def med_request(rid: str, medication: str) -> dict[str, Any]:
    return {
        "resourceType": "MedicationRequest",
        "id": rid,
        "status": "active",
        "intent": "order",
        "medicationReference": {"reference": medication},
        "subject": {"reference": "Patient/p1"},
    }


def medication(mid: str) -> dict[str, Any]:
    return {"resourceType": "Medication", "id": mid, "code": {"text": mid}}


def not_found(diagnostics: str) -> dict[str, Any]:
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "not-found", "diagnostics": diagnostics}],
    }


def sent_batch(call: Any) -> list[str]:
    body = json.loads(call.request.body)
    assert body["type"] == "batch"
    assert {e["request"]["method"] for e in body["entry"]} == {"GET"}
    return [unquote(e["request"]["url"]) for e in body["entry"]]


# --- one patient, with batch --------------------------------------------------------------------


def test_one_batch_fetches_the_record_then_paging_and_missing_medications(
    rsps: responses.RequestsMock, client: FhirClient, mappings: Mappings
) -> None:
    rsps.add(responses.GET, f"{BASE}/metadata", json=capability())
    page2 = f"{BASE}?_getpages=5e1f&_getpagesoffset=100&_count=100&_bundletype=searchset"
    rsps.add(
        responses.POST,
        BASE,
        json=batch_response(
            ("200 OK", PATIENT),
            ("200 OK", searchset(observation("o1"), next_url=page2)),
            ("200 OK", searchset()),
            ("200 OK", searchset()),
            (
                "200 OK",
                searchset(
                    med_request("r1", "Medication/m1"),
                    med_request("r2", "Medication/m2"),
                    med_request("r3", f"{BASE}/Medication/m3"),
                    medication("m1"),
                ),
            ),
            ("200 OK", searchset()),
            (
                "200 OK",
                searchset(
                    {
                        "resourceType": "Procedure",
                        "id": "x1",
                        "subject": {"reference": "Patient/p1"},
                    }
                ),
            ),
        ),
    )
    rsps.add(responses.GET, BASE, json=searchset(observation("o2")))
    rsps.add(
        responses.POST,
        BASE,
        json=batch_response(
            ("200", medication("m2")), ("404", not_found("Medication/m3 is not known"))
        ),
    )
    record = ServerSource(client, mappings).record("p1")

    first = sent_batch(rsps.calls[1])
    assert first[0] == "Patient/p1"
    assert [url.split("?")[0] for url in first[1:]] == list(SEARCHED)
    assert "MedicationRequest?patient=p1&_include=MedicationRequest:medication&_count=100" in first
    assert "_getpagesoffset=100" in (rsps.calls[2].request.url or "")
    assert sent_batch(rsps.calls[3]) == ["Medication/m2", "Medication/m3"]

    assert record.patient == PATIENT
    assert [o["id"] for o in record.of_type("Observation")] == ["o1", "o2"]
    assert [p["id"] for p in record.of_type("Procedure")] == ["x1"]
    assert record.resolve_medication("Medication/m1", {}) == medication("m1")
    assert record.resolve_medication("Medication/m2", {}) == medication("m2")
    assert record.problems == [
        "Medication/m3 (referenced by MedicationRequest/r3) is not on the server"
    ]
    assert client.request_count == 4  # metadata, the batch, one more page, the Medications


def test_observations_are_asked_for_by_the_codes_of_the_mappings(
    rsps: responses.RequestsMock, client: FhirClient, mappings: Mappings
) -> None:
    source = ServerSource(client, mappings)
    params = dict(source.searches("p1")[0][1])
    codes = set(params["code"].split(","))
    assert f"{LOINC}|2986-8" in codes  # total testosterone
    assert f"{LOINC}|89247-1" in codes  # ECOG
    assert f"{SCREENING}|progressive-lesion-count" in codes
    assert f"{LOINC}|97509-4" in codes  # disease status
    assert not any("399068003" in code for code in codes)  # a Condition code: not searched
    assert params["patient"] == "p1"


def test_codes_are_searched_as_written_in_the_mappings(mappings: Mappings) -> None:
    value_set = mappings.vs("ecog-0")
    assert (LOINC, "LA9622-7") in search_pairs(value_set)
    assert (LOINC, "LA9622-7") not in value_set.exact_pairs()  # normalised: 'la9622-7'
    assert observation_codes(mappings) == sorted(set(observation_codes(mappings)))


def test_a_value_set_without_written_codes_falls_back_to_canonical_loinc_case() -> None:
    value_set = ValueSet("x", "made in code", frozenset({(LOINC, "la9622-7"), (SCREENING, "new")}))
    assert search_pairs(value_set) == {(LOINC, "LA9622-7"), (SCREENING, "new")}


def test_a_type_the_server_lacks_is_skipped_and_reported(
    rsps: responses.RequestsMock, client: FhirClient, mappings: Mappings, wire: Wire
) -> None:
    statement = wire("fhir-kit-client/valid-capability-statement")  # HAPI: batch, few types
    statement["rest"][0]["resource"] = [
        {"type": t} for t in ALL_TYPES if t != "MedicationAdministration"
    ]
    rsps.add(responses.GET, f"{BASE}/metadata", json=statement)
    rsps.add(
        responses.POST,
        BASE,
        json=batch_response(("200 OK", PATIENT), *[("200 OK", searchset())] * 5),
    )
    record = ServerSource(client, mappings).record("p1")
    assert not any("MedicationAdministration" in url for url in sent_batch(rsps.calls[1]))
    assert record.problems == [
        "the server's CapabilityStatement does not list MedicationAdministration, "
        "so no MedicationAdministration was read"
    ]


def test_a_missing_patient_names_the_request_and_the_patient(
    rsps: responses.RequestsMock, client: FhirClient, mappings: Mappings, wire: Wire
) -> None:
    rsps.add(responses.GET, f"{BASE}/metadata", json=capability())
    rsps.add(
        responses.POST,
        BASE,
        json=batch_response(
            ("404 Not Found", wire("fhir-kit-client/patient-not-found")),
            *[("200 OK", searchset())] * 6,
        ),
    )
    with pytest.raises(FhirNotFound) as caught:
        ServerSource(client, mappings).record("abcdefg")
    assert str(caught.value) == (
        "FHIR server said: Resource Patient/abcdefg is not known "
        "(GET Patient/abcdefg (in a batch) for Patient/abcdefg, HTTP 404)"
    )


# --- one patient, without batch -----------------------------------------------------------------


def test_ingredients_named_by_reference_are_fetched_once(
    rsps: responses.RequestsMock, client: FhirClient, mappings: Mappings
) -> None:
    """An ingredient-only Medication names its drug through a Substance (criteria.md §4b):
    `_include` brings the Medication, not its ingredient, so the source reads it."""
    ingredient_only = {
        "resourceType": "Medication",
        "id": "m1",
        "ingredient": [{"itemReference": {"reference": "Substance/s1"}}],
    }
    substance = {"resourceType": "Substance", "id": "s1", "code": {"text": "abiraterone"}}
    rsps.add(responses.GET, f"{BASE}/metadata", json=capability())
    rsps.add(
        responses.POST,
        BASE,
        json=batch_response(
            ("200 OK", PATIENT),
            *[("200 OK", searchset())] * 3,
            ("200 OK", searchset(med_request("r1", "Medication/m1"), ingredient_only)),
            *[("200 OK", searchset())] * 2,
        ),
    )
    rsps.add(responses.POST, BASE, json=batch_response(("200", substance)))
    source = ServerSource(client, mappings)
    record = source.record("p1")
    assert sent_batch(rsps.calls[2]) == ["Substance/s1"]
    assert record.resolve_medication("Substance/s1", ingredient_only) == substance
    assert record.problems == []


def test_without_batch_the_searches_run_concurrently(
    rsps: responses.RequestsMock, make_client: ClientFactory, mappings: Mappings
) -> None:
    """With batch off (`never`; `auto` would first probe with a batch) the searches run at once."""
    client = make_client(batch="never")
    threads: set[str] = set()

    def answer(resources: list[dict[str, Any]]) -> Callable[[PreparedRequest], Any]:
        def reply(request: PreparedRequest) -> tuple[int, dict[str, str], str]:
            threads.add(threading.current_thread().name)
            return 200, {}, json.dumps(searchset(*resources))

        return reply

    rsps.add(responses.GET, f"{BASE}/metadata", json=capability(batch=False))
    rsps.add(responses.GET, f"{BASE}/Patient/p1", json=PATIENT)
    served = {
        "Observation": [observation("o1")],
        "Condition": [
            {"resourceType": "Condition", "id": "c1", "subject": {"reference": "Patient/p1"}}
        ],
    }
    for resource_type in ALL_TYPES[1:7]:
        rsps.add_callback(
            responses.GET, f"{BASE}/{resource_type}", callback=answer(served.get(resource_type, []))
        )
    record = ServerSource(client, mappings).record("p1")
    assert record.patient == PATIENT
    assert [o["id"] for o in record.of_type("Observation")] == ["o1"]
    assert [c["id"] for c in record.of_type("Condition")] == ["c1"]
    assert all(call.request.method == "GET" for call in rsps.calls)
    assert client.request_count == 8  # metadata, Patient, six searches
    assert threads and all(name.startswith("fhir-search") for name in threads)


def test_without_batch_a_failed_search_names_its_request_and_patient(
    rsps: responses.RequestsMock, make_client: ClientFactory, mappings: Mappings
) -> None:
    rsps.add(responses.GET, f"{BASE}/metadata", json=capability(batch=False))
    rsps.add(responses.GET, f"{BASE}/Patient/p1", json=PATIENT)
    for resource_type in ALL_TYPES[1:7]:
        status = 500 if resource_type == "Condition" else 200
        rsps.add(responses.GET, f"{BASE}/{resource_type}", status=status, json=searchset())
    with pytest.raises(FhirNetworkError) as caught:
        ServerSource(make_client(retries=0, batch="never"), mappings).record("p1")
    assert caught.value.request == "GET Condition?patient=p1&_count=100"
    assert caught.value.patient == "p1"


def test_records_stop_at_the_first_patient_that_fails(
    rsps: responses.RequestsMock, client: FhirClient, mappings: Mappings
) -> None:
    rsps.add(responses.GET, f"{BASE}/metadata", json=capability())
    rsps.add(
        responses.POST, BASE, json=batch_response(("200", PATIENT), *[("200", searchset())] * 6)
    )
    rsps.add(
        responses.POST,
        BASE,
        json=batch_response(("404", not_found("gone")), *[("200", searchset())] * 6),
    )
    records = ServerSource(client, mappings).records(["p1", "p2", "p3"])
    assert next(records).patient_id == "p1"
    with pytest.raises(FhirNotFound, match="for Patient/p2"):
        next(records)


# --- populations --------------------------------------------------------------------------------


def test_patient_ids_from_a_search_ask_for_ids_only_and_follow_pages(
    rsps: responses.RequestsMock, client: FhirClient, mappings: Mappings, wire: Wire
) -> None:
    def on_our_host(name: str) -> dict[str, Any]:
        text = json.dumps(wire(f"fhir-kit-client/{name}")).replace("https://example.com", BASE)
        page: dict[str, Any] = json.loads(text)
        return page

    page1, page2 = on_our_host("search-results-page-1"), on_our_host("search-results-page-2")
    page2["link"] = [link for link in page2["link"] if link["relation"] != "next"]
    rsps.add(responses.GET, f"{BASE}/Patient", json=page1)
    rsps.add(responses.GET, f"{BASE}/", json=page2)
    found = list(
        ServerSource(client, mappings).patient_ids(
            search="Patient?_has:Condition:patient:code=http://snomed.info/sct|399068003"
        )
    )
    assert found == [e["resource"]["id"] for e in page1["entry"] + page2["entry"]]
    first = unquote(rsps.calls[0].request.url or "")
    assert "_has:Condition:patient:code=http://snomed.info/sct|399068003" in first
    assert "_elements=id" in first


def test_patient_ids_from_a_group_are_its_active_patient_members(
    rsps: responses.RequestsMock, client: FhirClient, mappings: Mappings
) -> None:
    group = {
        "resourceType": "Group",
        "id": "g1",
        "type": "person",
        "actual": True,
        "member": [
            {"entity": {"reference": "Patient/a"}},
            {"entity": {"reference": f"{BASE}/Patient/b/_history/3"}},
            {"entity": {"reference": "Practitioner/x"}},
            {"entity": {"reference": "Patient/c"}, "inactive": True},
            {"entity": {"reference": "Patient/a"}},
        ],
    }
    rsps.add(responses.GET, f"{BASE}/Group/g1", json=group)
    assert list(ServerSource(client, mappings).patient_ids(group="Group/g1")) == ["a", "b"]


def test_patient_ids_given_are_kept_in_order_once(client: FhirClient, mappings: Mappings) -> None:
    source = ServerSource(client, mappings)
    assert list(source.patient_ids(ids=["b", "a", "b"])) == ["b", "a"]


@pytest.mark.parametrize(
    "arguments",
    [{}, {"search": "gender=male", "ids": ["a"]}, {"search": "Condition?code=x"}],
)
def test_patient_ids_need_exactly_one_patient_source(
    client: FhirClient, mappings: Mappings, arguments: dict[str, Any]
) -> None:
    with pytest.raises(ValueError):
        list(ServerSource(client, mappings).patient_ids(**arguments))
