"""Engine-wide behaviour: order, status, safety principles, determinism, as_of."""

from __future__ import annotations

import json
from datetime import date

import pytest

from service.mapping import Mappings
from service.screening import extract
from service.screening.engine import Screener
from service.screening.result import CRITERIA, Result, Status
from tests.builders import (
    ICD10CM,
    LOINC,
    RXNORM,
    SCT,
    concept,
    condition,
    medication_statement,
    observation,
    patient,
    record,
    total_testosterone,
)
from tests.conftest import AS_OF

ADENOCARCINOMA = concept(SCT, "399490008", "Adenocarcinoma of prostate")


def test_every_criterion_in_spec_order_with_a_reason(screener: Screener) -> None:
    result = screener.screen(record(), AS_OF)
    assert [c.id for c in result.criteria] == [cid for cid, _ in CRITERIA]
    assert all(c.reason.strip() for c in result.criteria)


def test_no_data_at_all_is_ineligible_only_through_histology(screener: Screener) -> None:
    result = screener.screen(record(), AS_OF)
    assert result.status is Status.INELIGIBLE
    assert [c.id for c in result.criteria if c.rules_out()] == ["histology"]


def test_missing_inclusion_data_stays_candidate_and_lists_missing_data(screener: Screener) -> None:
    result = screener.screen(record(condition(ADENOCARCINOMA)), AS_OF)
    assert result.status is Status.CANDIDATE
    assert result.missing_data == (
        "oligoprogression", "systemic-therapy", "castrate-testosterone", "performance-status",
    )  # fmt: skip
    assert set(result.needs_review) == set(result.missing_data) | {
        "consent", "compliance", "tumour-board", "sbrt-contraindicated", "unable-to-consent",
    }  # fmt: skip


def test_informational_criterion_never_changes_status(screener: Screener) -> None:
    result = screener.screen(record(condition(ADENOCARCINOMA)), AS_OF)
    assert result.criterion("primary-treated").result is Result.NOT_MET
    assert "obligatory" in result.criterion("primary-treated").reason
    assert result.status is Status.CANDIDATE
    assert "primary-treated" not in result.needs_review


def test_unreadable_resource_never_rules_out(screener: Screener) -> None:
    """A non-conforming testosterone result is reported, and cannot make the patient ineligible."""
    broken = total_testosterone(80, "ng/dL")
    broken["valueQuantity"]["value"] = "eighty"
    result = screener.screen(record(condition(ADENOCARCINOMA), broken), AS_OF)
    castrate = result.criterion("castrate-testosterone")
    above = result.criterion("testosterone-above-castrate")
    assert castrate.result is Result.UNKNOWN and above.result is Result.UNKNOWN
    assert broken["id"] in castrate.reason and "could not be read" in castrate.reason
    assert "eighty" not in castrate.reason  # no patient value is echoed from a bad resource
    assert result.status is Status.CANDIDATE


def test_unreadable_resource_beside_a_good_one_is_noted(screener: Screener) -> None:
    broken = total_testosterone(80, "ng/dL", day="2026-10-01")
    broken["valueQuantity"]["value"] = "eighty"
    good = total_testosterone(20, "ng/dL", day="2026-11-01")
    result = screener.screen(record(condition(ADENOCARCINOMA), broken, good), AS_OF)
    castrate = result.criterion("castrate-testosterone")
    assert castrate.result is Result.MET and "Could not be read" in castrate.reason


def test_entered_in_error_and_refuted_are_ignored_and_said(screener: Screener) -> None:
    wrong = total_testosterone(80, "ng/dL", status="entered-in-error")
    refuted = condition(
        concept(ICD10CM, "C34.90"),
        verificationStatus=concept(
            "http://terminology.hl7.org/CodeSystem/condition-ver-status", "refuted"
        ),
    )
    result = screener.screen(record(condition(ADENOCARCINOMA), wrong, refuted), AS_OF)
    castrate = result.criterion("castrate-testosterone")
    assert castrate.result is Result.UNKNOWN
    assert f"{wrong['id']} (entered in error)" in castrate.reason
    assert result.criterion("other-malignancy").result is Result.NOT_MET


def test_data_after_as_of_is_ignored_so_past_screens_reproduce(screener: Screener) -> None:
    high = total_testosterone(80, "ng/dL", day="2026-11-20")
    low = total_testosterone(20, "ng/dL", day="2026-11-01")
    data = record(condition(ADENOCARCINOMA), high, low)
    now = screener.screen(data, AS_OF)
    then = screener.screen(data, date(2026, 11, 10))
    assert now.criterion("castrate-testosterone").result is Result.NOT_MET
    assert then.criterion("castrate-testosterone").result is Result.MET
    assert "dated after as_of" in then.criterion("castrate-testosterone").reason


def test_results_are_deterministic_byte_for_byte(screener: Screener) -> None:
    data = record(condition(ADENOCARCINOMA), total_testosterone(1.2, "nmol/L"))
    first = json.dumps(screener.screen(data, AS_OF).to_dict())
    second = json.dumps(screener.screen(data, AS_OF).to_dict())
    assert first == second


def test_missing_patient_resource_gives_unknown_demographics(screener: Screener) -> None:
    result = screener.screen(record(with_patient=False), AS_OF)
    for criterion_id in ("age", "sex", "deceased"):
        assert result.criterion(criterion_id).result is Result.UNKNOWN
        assert "no Patient resource" in result.criterion(criterion_id).reason


def test_unreadable_patient_gives_unknown_demographics(screener: Screener) -> None:
    data = record(with_patient=False)
    data.add(patient(birthDate=19500314))
    result = screener.screen(data, AS_OF)
    assert result.criterion("age").result is Result.UNKNOWN
    assert "unreadable" in result.criterion("age").reason


def test_free_testosterone_is_never_used(screener: Screener) -> None:
    free = observation(concept(LOINC, "2991-8", "Testosterone Free"), "2026-11-01",
                       valueQuantity={"value": 5, "unit": "pg/mL", "system": "http://unitsofmeasure.org", "code": "pg/mL"})  # fmt: skip
    result = screener.screen(record(condition(ADENOCARCINOMA), free), AS_OF)
    castrate = result.criterion("castrate-testosterone")
    assert castrate.result is Result.UNKNOWN and "not total testosterone" in castrate.reason


def test_result_round_trips_through_its_dict(screener: Screener) -> None:
    from service.screening.result import ScreenResult

    result = screener.screen(
        record(condition(ADENOCARCINOMA), total_testosterone(1.2, "nmol/L")), AS_OF
    )
    assert ScreenResult.from_dict(result.to_dict()) == result


def test_drug_recognition_is_remembered_within_a_bound(
    monkeypatch: pytest.MonkeyPatch, mappings: Mappings
) -> None:
    """The same product is recognised once; the memory of products never outgrows its bound,
    and what is remembered is what would have been recognised afresh."""
    monkeypatch.setattr(extract, "RECOGNISED_CACHE_SIZE", 2)
    cached, fresh = Screener(mappings), Screener(mappings)
    drugs = [
        concept(RXNORM, "752899", "enzalutamide 40 MG"),
        {"text": "Xofigo 1100 kBq/mL"},
        {"text": "metformin 500 MG"},
        concept(RXNORM, "752899", "enzalutamide 40 MG"),
    ]
    for drug in drugs:
        data = record(medication_statement(drug))
        assert cached.screen(data, AS_OF).to_dict() == fresh.screen(data, AS_OF).to_dict()
        fresh.extractor._recognised_cache.clear()
        assert len(cached.extractor._recognised_cache) <= 2
    calls: list[object] = []
    original = cached.extractor._recognised
    monkeypatch.setattr(cached.extractor, "_recognised", lambda c: calls.append(c) or original(c))
    cached.screen(record(medication_statement(drugs[-1])), AS_OF)
    assert calls == []  # the last product is still remembered


def test_versions_from_a_server_do_not_reorder_reasons(screener: Screener) -> None:
    """A server adds '/_history/N' to every reference; ordering by it put 'met-bone-icd' before
    'met-bone' and changed the reasons. Sorted by the unversioned reference, they are the same."""
    import re

    from service.fhir.local_source import LocalSource
    from tests.conftest import AS_OF, FIXTURES

    case = "metastases-one-organ-two-codes"
    (plain,) = LocalSource(FIXTURES / f"{case}.json").records([f"fx-{case}"])
    (versioned,) = LocalSource(FIXTURES / f"{case}.json").records([f"fx-{case}"])
    for resources in versioned.resources.values():
        for resource in resources:
            resource["meta"] = {"versionId": "1"}
    expected = screener.screen(plain, AS_OF).to_dict()
    got = json.loads(
        re.sub(r"/_history/1", "", json.dumps(screener.screen(versioned, AS_OF).to_dict()))
    )
    assert got == expected
