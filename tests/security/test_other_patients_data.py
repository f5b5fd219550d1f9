"""Only this patient's resources are evidence (criteria.md §3, fhir-contract.md "Trust nothing
the server sends"): a server that ignores the `patient` search parameter, or a CDS Hooks prefetch,
hands over another patient's Condition, and it must never decide or be cited.

The foreign resource is the active lung cancer of `fx-other-malignancy-active-lung-cancer`,
which makes its own patient ineligible; `fx-base` is a candidate and must stay one.
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from service.api.views.cds import prefetch_templates
from service.cli import main
from service.fhir.client import FhirClient
from service.fhir.local_source import LocalSource
from service.fhir.server_source import ServerSource
from service.mapping import load_mappings
from service.screening.engine import Screener
from service.screening.result import ScreenResult, Status
from tests.api.conftest import CDS_URL, cds_app
from tests.conftest import FIXTURES
from tests.reliability import harness
from tests.reliability.conftest import Medplum
from tests.reliability.faultproxy import Fault, FaultProxy, Request

AS_OF = date(2026, 11, 26)
CANDIDATE = "fx-base"
OTHER = "fx-other-malignancy-active-lung-cancer"
FOREIGN_ID = f"{OTHER}-lung-cancer"


def _foreign_condition() -> dict[str, Any]:
    bundle = json.loads((FIXTURES / f"{OTHER.removeprefix('fx-')}.json").read_text())
    return next(e["resource"] for e in bundle["entry"] if e["resource"]["id"] == FOREIGN_ID)


def _with_foreign(bundle: dict[str, Any], foreign: dict[str, Any]) -> None:
    bundle.setdefault("entry", []).append({"resource": foreign, "search": {"mode": "match"}})
    if isinstance(bundle.get("total"), int):
        bundle["total"] += 1


def _ignoring_patient_parameter(foreign: dict[str, Any]) -> Fault:
    """The proxy answers the candidate's Condition search (alone, or inside its batch) with the
    other patient's Condition added, as a server that ignores `patient` would."""

    def inject(payload: bytes, request: Request) -> bytes:
        data = json.loads(payload)
        if request.method == "GET" and urlsplit(request.path).path.endswith("/Condition"):
            _with_foreign(data, foreign)
        elif request.method == "POST" and data.get("type") == "batch-response":
            asked = json.loads(request.body)["entry"]
            for ask, answer in zip(asked, data["entry"], strict=True):
                if ask["request"]["url"].startswith("Condition?"):
                    _with_foreign(answer["resource"], foreign)
        return json.dumps(data).encode()

    def about_candidate(request: Request) -> bool:
        return f"patient={CANDIDATE}&" in request.path or f'Patient/{CANDIDATE}"' in request.text

    return Fault("transform", fn=inject, match=about_candidate)


def _cited(result: ScreenResult) -> set[str]:
    return {e.reference for c in result.criteria for e in c.evidence}


@pytest.mark.parametrize("batch", ["always", "never"])
def test_a_server_that_ignores_the_patient_parameter_cannot_rule_a_candidate_out(
    medplum: Medplum, proxy: FaultProxy, batch: str, caplog: pytest.LogCaptureFixture
) -> None:
    foreign = _foreign_condition()
    mappings = load_mappings()
    with FhirClient(medplum.base_url) as direct:  # the peer really has it, for OTHER
        stored = list(direct.search("Condition", [("patient", OTHER)]))
    assert FOREIGN_ID in {c["id"] for c in stored}
    fault = proxy.add(_ignoring_patient_parameter(foreign))
    with FhirClient(proxy.base_url + "/fhir", batch=batch) as client:
        record = ServerSource(client, mappings).record(CANDIDATE)
    assert fault.applied >= 1
    assert [r["id"] for r in record.foreign] == [FOREIGN_ID]
    assert FOREIGN_ID not in {c["id"] for c in record.of_type("Condition")}
    result = Screener(mappings).screen(record, AS_OF)
    assert result.status is Status.CANDIDATE
    assert not any(FOREIGN_ID in reference for reference in _cited(result))
    other_malignancy = next(c for c in result.criteria if c.id == "other-malignancy")
    assert f"Condition/{FOREIGN_ID}" in other_malignancy.reason
    assert "names another patient" in other_malignancy.reason
    assert any(f"Condition/{FOREIGN_ID}" in note for note in result.notes)
    logged = [r.getMessage() for r in caplog.records if "another patient" in r.getMessage()]
    assert logged == [
        f"Patient/{CANDIDATE}: 1 resource(s) in the server's answers name another patient "
        f"(or none), not used: Condition/{FOREIGN_ID}"
    ]
    harness.record(
        "security: another patient's Condition in a search answer",
        batch=batch, status=result.status.value, dropped=len(record.foreign),
    )  # fmt: skip


def test_the_cli_warns_about_another_patients_resource_and_screens_the_candidate(
    medplum: Medplum, proxy: FaultProxy, capsys: pytest.CaptureFixture[str]
) -> None:
    proxy.add(_ignoring_patient_parameter(_foreign_condition()))
    code = main(["screen", "--fhir-base", proxy.base_url + "/fhir", "--patient", CANDIDATE,
                 "--as-of", AS_OF.isoformat(), "--format", "json", "--no-store"])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert json.loads(captured.out)["status"] == "candidate"
    warnings = [line for line in captured.err.splitlines() if "another patient" in line]
    assert len(warnings) == 1 and f"Condition/{FOREIGN_ID}" in warnings[0], captured.err


def _prefetch(patient: str, extra_condition: dict[str, Any] | None) -> dict[str, Any]:
    """Every prefetch template answered from the fixture files, as an EHR would."""
    record = LocalSource(FIXTURES).record(patient)
    keys = {
        "observations": "Observation", "condition": "Condition",
        "medicationStatement": "MedicationStatement", "medicationRequest": "MedicationRequest",
        "medicationAdministration": "MedicationAdministration", "procedure": "Procedure",
    }  # fmt: skip
    prefetch: dict[str, Any] = {"patient": record.patient}
    for key, resource_type in keys.items():
        resources = record.of_type(resource_type)
        prefetch[key] = {
            "resourceType": "Bundle",
            "type": "searchset",
            "entry": [{"resource": r} for r in resources],
        }
    if extra_condition is not None:
        _with_foreign(prefetch["condition"], extra_condition)
    return prefetch


def test_a_cds_prefetch_with_another_patients_condition_keeps_the_candidate(
    tmp_path: Path,
) -> None:
    with cds_app(tmp_path) as (client, ehr, audience):
        with client.application.app_context():
            assert set(prefetch_templates()) == {
                "patient", "observations", "condition", "medicationStatement",
                "medicationRequest", "medicationAdministration", "procedure",
            }  # fmt: skip
        cards = {}
        for name, extra in (("clean", None), ("foreign", _foreign_condition())):
            call = {
                "hook": "patient-view", "hookInstance": f"h-{name}",
                "context": {"patientId": CANDIDATE, "userId": "Practitioner/1"},
                "prefetch": _prefetch(CANDIDATE, extra),
            }  # fmt: skip
            response = client.post(
                CDS_URL, json=call, headers={"Authorization": f"Bearer {ehr.token(audience)}"}
            )
            assert response.status_code == 200, response.get_json()
            cards[name] = response.get_json()["cards"][0]
    clean, foreign = cards["clean"], cards["foreign"]
    assert clean["summary"] == foreign["summary"]
    assert foreign["summary"].startswith("MEDCARE trial: candidate")
    assert "Ruled out" not in foreign["detail"]
    assert "other-malignancy" not in foreign["summary"]
    assert f"Condition/{FOREIGN_ID}" in foreign["detail"]  # reported as a data problem
    assert "another patient" in foreign["detail"]
    assert FOREIGN_ID not in clean["detail"]
