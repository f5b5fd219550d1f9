"""The fingerprint: equal for an equal decision, different when the decision differs."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest

from service.screening.result import Evidence, Result, ScreenResult, Status
from service.writeback.fingerprint import fingerprint
from tests.unit.writeback.sample import make_result, with_criterion


def test_format_is_sha256_hex() -> None:
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", fingerprint(make_result()))


def test_equal_results_give_equal_fingerprints() -> None:
    assert fingerprint(make_result()) == fingerprint(make_result())


def test_run_dependent_fields_do_not_count() -> None:
    """A daily re-screen or a software upgrade with the same outcome writes nothing."""
    base = fingerprint(make_result())
    assert fingerprint(make_result(as_of="2026-12-01")) == base
    assert fingerprint(make_result(software_version="0.2.0")) == base


# Issue 14 (fhir-contract.md "What the current result is"): a change is a change of the
# decision, not a new version of an unchanged resource. These two cases used to be in
# test_any_content_change_changes_the_fingerprint ("evidence-added", "evidence-version").
@pytest.mark.parametrize(
    "same_decision",
    [
        pytest.param(
            with_criterion(
                make_result(), "age", evidence=(Evidence("Patient/123/_history/4", "Born 1951"),)
            ),
            id="evidence-added",
        ),
        pytest.param(
            with_criterion(
                make_result(),
                "castrate-testosterone",
                evidence=(
                    Evidence("Observation/77/_history/3", "Testosterone 1.2 nmol/L, 2026-10-30"),
                ),
            ),
            id="evidence-version",
        ),
    ],
)
def test_evidence_alone_does_not_count(same_decision: ScreenResult) -> None:
    """A phone-number edit (a new Patient version the age criterion cites) decides nothing."""
    assert fingerprint(same_decision) == fingerprint(make_result())


def test_a_version_quoted_in_a_reason_does_not_count() -> None:
    """Reasons name set-aside resources ("Not used: Observation/9/_history/1 (entered in
    error)"): read from files (no version) or in a new version, the decision is the same."""

    def quoting(reference: str) -> ScreenResult:
        reason = f"Nothing in the record. Not used: {reference} (entered in error)."
        return with_criterion(make_result(), "age", reason=reason)

    versions = {
        fingerprint(quoting(f"Observation/9{v}")) for v in ("", "/_history/1", "/_history/2")
    }
    assert len(versions) == 1
    assert fingerprint(quoting("Observation/10")) not in versions


@pytest.mark.parametrize(
    "changed",
    [
        pytest.param(
            with_criterion(make_result(), "age", reason="Aged 75 on 2026-11-26."), id="reason"
        ),
        pytest.param(with_criterion(make_result(), "age", result=Result.UNKNOWN), id="result"),
        pytest.param(make_result(status=Status.INELIGIBLE), id="status"),
        pytest.param(make_result(patient_type=1), id="patient-type"),
        pytest.param(
            make_result(
                strata={"metastases": ">1", "localization": "M1b-M1c", "systemic_therapy": "type-2"}
            ),
            id="strata",
        ),
        pytest.param(make_result(missing_data=("age",)), id="missing-data"),
        pytest.param(make_result(notes=("Observation/9: unreadable",)), id="notes"),
        pytest.param(make_result(rules_version="medcare-1"), id="rules-version"),
        pytest.param(make_result(patient="Patient/124"), id="patient"),
    ],
)
def test_any_content_change_changes_the_fingerprint(changed: ScreenResult) -> None:
    assert fingerprint(changed) != fingerprint(make_result())


def test_criterion_order_counts() -> None:
    result = make_result()
    reordered = replace(result, criteria=tuple(reversed(result.criteria)))
    assert fingerprint(reordered) != fingerprint(result)
