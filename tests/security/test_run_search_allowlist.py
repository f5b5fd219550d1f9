"""Run searches select cohorts, not people (issue 10 item 10): a demographic search parameter
is refused with a 400 naming it, before anything is sent to the FHIR server (here a real HTTP
server on loopback that records every request); the CLI's --search follows the same rule."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from service.api import create_app
from service.cli import main
from service.config import DEFAULT_RUN_SEARCH_PARAMS
from service.fhir.cohort_search import SearchNotAllowed, check_cohort_search
from service.runtime import Runtime
from tests.reliability import harness
from tests.security.tlsserver import Recorder, serving

pytestmark = pytest.mark.timeout(120)

# each refused search, and the parameter the refusal must name
REFUSED = {
    "Patient?name=Smith": "name",
    "Patient?given=Jan&family=Peeters": "given",
    "Patient?birthdate=1950-03-14": "birthdate",
    "Patient?address-city=Leuven": "address-city",
    "Patient?address=Naamsestraat": "address",
    "Patient?telecom=0470123456": "telecom",
    "Patient?phone=0470123456": "phone",
    "Patient?email=jan@example.org": "email",
    "Patient?identifier=urn:oid:2.16.840.1.113883.2.4.6.3|123456782": "identifier",
    "Patient?name:contains=Pee": "name:contains",
    "Patient?na%6De=Smith": "name",  # percent-encoded: what the server decodes is checked
    "Patient?_has:Condition:patient:code=http://snomed.info/sct|399068003&family=Peeters": "family",
    "Patient?_has:Observation:patient:value-string=Peeters": "_has:Observation:patient:value-string",
    "Patient?general-practitioner.name=Janssens": "general-practitioner.name",
    "Patient?_content=Peeters": "_content",
    "Patient?_text=Peeters": "_text",
    "Patient?_filter=name eq Smith": "_filter",
    "Patient?_sort=birthdate": "_sort",
    "name=Smith": "name",  # the bare query form the CLI accepts
}
ALLOWED = [
    "Patient",
    "Patient?_has:Condition:patient:code=http://snomed.info/sct|399068003",
    "Patient?_has:Condition:subject:code=http://snomed.info/sct|399068003&_count=50",
    "Patient?_has:MedicationStatement:patient:code=http://www.nlm.nih.gov/research/umls/rxnorm|1100072",
    "Patient?_id=fx-base,fx-age-17",
    "Patient?_list=medcare-registry",
    "Patient?_lastUpdated=ge2026-01-01&gender=male",
    "Patient?_tag=http://example.org/registry|prostate&_id:missing=false",
]


def test_the_allow_list_names_the_first_parameter_outside_it() -> None:
    for search, parameter in REFUSED.items():
        with pytest.raises(SearchNotAllowed) as refused:
            check_cohort_search(search, DEFAULT_RUN_SEARCH_PARAMS)
        assert refused.value.parameter == parameter, search
        assert repr(parameter) in str(refused.value)
    for search in ALLOWED:
        check_cohort_search(search, DEFAULT_RUN_SEARCH_PARAMS)
    # odd characters in a name are refused, not matched, and not echoed
    with pytest.raises(SearchNotAllowed) as odd:
        check_cohort_search("Patient?_id;name=Smith", DEFAULT_RUN_SEARCH_PARAMS)
    assert odd.value.parameter == "(unreadable)"
    # the list is a setting: a site that allows `name` gets it, and only what it lists
    check_cohort_search("Patient?name=Smith", ("name",))
    with pytest.raises(SearchNotAllowed):
        check_cohort_search("Patient?_id=1", ("name",))


@pytest.fixture
def fhir() -> Iterator[Recorder]:
    with serving() as recorder:
        yield recorder


def _client(fhir: Recorder, folder: Path, **overrides: Any) -> tuple[FlaskClient, Runtime]:
    settings = harness.settings_for(
        fhir.url + "/fhir", f"sqlite:///{folder / 'search.sqlite3'}", **overrides
    )
    runtime = Runtime(settings)
    return create_app(settings, runtime).test_client(), runtime


def _searches(fhir: Recorder) -> list[str]:
    return [r["path"] for r in fhir.requests if "/Patient" in r["path"]]


def test_a_run_search_for_people_is_refused_and_never_sent(fhir: Recorder, tmp_path: Path) -> None:
    client, runtime = _client(fhir, tmp_path)
    try:
        for search, parameter in REFUSED.items():
            if not search.startswith("Patient"):
                continue  # the API's schema wants the 'Patient?' form
            response = client.post("/v1/runs", json={"search": search}, headers=harness.AUTH)
            assert response.status_code == 400, (search, response.get_json())
            error = response.get_json()["error"]
            assert error["code"] == "search-not-allowed" and error["details"] == {
                "parameter": parameter
            }
            assert parameter in error["message"]
        assert _searches(fhir) == []  # nothing reached the FHIR server
        # a cohort search is accepted
        cohort = {"search": ALLOWED[1]}
        assert client.post("/v1/runs", json=cohort, headers=harness.AUTH).status_code == 202
    finally:
        runtime.close()
    harness.record(
        "security: run searches select cohorts", refused=len(REFUSED) - 1,
        sent_to_server=0, allowed_by_default=list(DEFAULT_RUN_SEARCH_PARAMS),
    )  # fmt: skip


def test_the_allow_list_is_a_setting(fhir: Recorder, tmp_path: Path) -> None:
    client, runtime = _client(fhir, tmp_path, run_search_params=("name",))
    try:
        by_name = client.post("/v1/runs", json={"search": "Patient?name=x"}, headers=harness.AUTH)
        assert by_name.status_code == 202
        by_code = client.post("/v1/runs", json={"search": ALLOWED[1]}, headers=harness.AUTH)
        assert by_code.get_json()["error"]["details"] == {
            "parameter": "_has:Condition:patient:code"
        }
    finally:
        runtime.close()


def test_the_cli_search_follows_the_same_rule(
    fhir: Recorder, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MEDCARE_RUN_SEARCH_PARAMS", raising=False)
    code = main(["screen", "--fhir-base", fhir.url + "/fhir", "--no-store",
                 "--search", "Patient?birthdate=1950-03-14"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "'birthdate' is not allowed" in err
    assert "1950-03-14" not in err and len(err.strip().splitlines()) == 1
    assert fhir.requests == []
    # the CLI reads the same setting
    monkeypatch.setenv("MEDCARE_RUN_SEARCH_PARAMS", "_id")
    code = main(["screen", "--fhir-base", fhir.url + "/fhir", "--no-store",
                 "--search", ALLOWED[1]])  # fmt: skip
    assert code == 2 and "'_has:Condition:patient:code' is not allowed" in capsys.readouterr().err
    assert fhir.requests == []
