"""Medication records (criteria.md §4b, medcare-2): docetaxel as a course, ingredients, notes."""

from __future__ import annotations

from itertools import count
from typing import Any

from service.codesystems import RXNORM, SNOMED
from service.screening.engine import Screener
from service.screening.result import Result, ScreenResult
from tests.builders import (
    SCREENING,
    concept,
    condition,
    medication_administration,
    medication_statement,
    observation,
    record,
    total_testosterone,
)
from tests.conftest import AS_OF

_ids = count(1)
ADENOCARCINOMA = concept(SNOMED, "399490008", "Adenocarcinoma of prostate")
DOCETAXEL = concept(RXNORM, "1860480", "1 ML DOCEtaxel 20 MG/ML Injection")
LEUPROLIDE = concept(RXNORM, "752899", "0.25 ML Leuprolide Acetate 30 MG/ML Prefilled Syringe")
ENZALUTAMIDE = concept(RXNORM, "1307303", "enzalutamide 40 MG Oral Capsule")


def request(
    code: dict[str, Any], authored: str, status: str = "active", **fields: Any
) -> dict[str, Any]:
    return {
        "resourceType": "MedicationRequest", "id": f"mr-{next(_ids)}", "status": status,
        "intent": "order", "medicationCodeableConcept": code,
        "subject": {"reference": "Patient/t1"}, "authoredOn": authored, **fields,
    }  # fmt: skip


def administration(code: dict[str, Any], day: str, status: str = "completed") -> dict[str, Any]:
    return medication_administration(f"ma-{next(_ids)}", code, day, status)


def lesion_count(n: int, day: str = "2026-11-10") -> dict[str, Any]:
    return observation(concept(SCREENING, "progressive-lesion-count"), day, valueInteger=n)


def screen(screener: Screener, *resources: dict[str, Any]) -> ScreenResult:
    adt = request(LEUPROLIDE, "2024-03-01")
    castrate = total_testosterone(20, "ng/dL", day="2026-11-01")
    return screener.screen(record(condition(ADENOCARCINOMA), adt, castrate, *resources), AS_OF)


def test_a_stale_active_docetaxel_order_is_given_with_end_unknown(screener: Screener) -> None:
    result = screen(screener, request(DOCETAXEL, "2020-06-08"), lesion_count(2))
    therapy = result.criterion("systemic-therapy")
    assert therapy.result is Result.MET and result.patient_type == 2
    assert "2020-06-08" in therapy.reason and "still ongoing" not in therapy.reason
    on_docetaxel = result.criterion("progression-on-docetaxel")
    assert on_docetaxel.result is Result.UNKNOWN
    assert "2020-06-08" in on_docetaxel.reason and "pharmacy" in on_docetaxel.reason


def test_a_recent_active_docetaxel_order_is_ongoing(screener: Screener) -> None:
    result = screen(screener, request(DOCETAXEL, "2026-08-01"), lesion_count(2))
    therapy = result.criterion("systemic-therapy")
    assert therapy.result is Result.UNKNOWN and result.patient_type is None
    assert "neither type 1 nor type 2" in therapy.reason and "Chase" in therapy.reason
    assert result.strata["systemic_therapy"] is None
    assert result.criterion("progression-on-docetaxel").result is Result.MET


def test_six_months_is_exact(screener: Screener) -> None:
    """'less than 6 months before': started 2026-05-10, progression 2026-11-10 -> not ongoing."""
    on_edge = screen(screener, request(DOCETAXEL, "2026-05-10"), lesion_count(2))
    assert on_edge.criterion("progression-on-docetaxel").result is Result.UNKNOWN
    inside = screen(screener, request(DOCETAXEL, "2026-05-11"), lesion_count(2))
    assert inside.criterion("progression-on-docetaxel").result is Result.MET


def test_administrations_decide_over_an_earlier_order(screener: Screener) -> None:
    """The course ends 28 days after the last dose, whatever the order still says."""
    doses = [administration(DOCETAXEL, d) for d in ("2026-06-01", "2026-06-22", "2026-07-13")]
    result = screen(screener, request(DOCETAXEL, "2026-06-01"), *doses, lesion_count(2))
    on_docetaxel = result.criterion("progression-on-docetaxel")
    assert on_docetaxel.result is Result.NOT_MET
    assert "last dose 2026-07-13" in on_docetaxel.reason
    assert result.criterion("systemic-therapy").result is Result.MET
    assert result.patient_type == 2


def test_a_dose_within_28_days_of_the_progression_is_ongoing(screener: Screener) -> None:
    doses = [administration(DOCETAXEL, d) for d in ("2026-09-22", "2026-10-13")]
    met = screen(screener, *doses, lesion_count(2, "2026-11-10"))
    assert met.criterion("progression-on-docetaxel").result is Result.MET
    late = screen(screener, *doses, lesion_count(2, "2026-11-11"))  # 29 days after
    assert late.criterion("progression-on-docetaxel").result is Result.NOT_MET


def test_docetaxel_stopped_for_progression_is_unknown_and_quoted(screener: Screener) -> None:
    stopped = medication_statement(
        DOCETAXEL, status="stopped",
        effectivePeriod={"start": "2026-03-01", "end": "2026-06-01"},
        statusReason=[{"text": "disease progression"}],
    )  # fmt: skip
    result = screen(screener, stopped, lesion_count(2))
    on_docetaxel = result.criterion("progression-on-docetaxel")
    assert on_docetaxel.result is Result.UNKNOWN
    assert "disease progression" in on_docetaxel.reason
    assert result.patient_type == 2  # any exposure rules out type 1


def test_an_old_adt_order_with_nothing_newer_is_said_without_changing_the_result(
    screener: Screener,
) -> None:
    data = record(condition(ADENOCARCINOMA), request(LEUPROLIDE, "2020-01-15"))
    therapy = screener.screen(data, AS_OF).criterion("systemic-therapy")
    assert therapy.result is Result.MET
    assert "older than 12 months" in therapy.reason and "2020-01-15" in therapy.reason
    supported = screen(screener)  # the same kind of order, with a castrate result this year
    assert "older than 12 months" not in supported.criterion("systemic-therapy").reason


def test_a_stopped_arta_is_named_and_does_not_make_type_2(screener: Screener) -> None:
    stopped = medication_statement(
        ENZALUTAMIDE, status="stopped", effectivePeriod={"start": "2025-01-01", "end": "2025-09-01"}
    )
    result = screen(screener, stopped)
    therapy = result.criterion("systemic-therapy")
    assert therapy.result is Result.MET and result.patient_type == 1
    assert "enzalutamide" in therapy.reason and "sponsor" in therapy.reason


def test_an_ingredient_only_combination_is_each_of_its_drugs(screener: Screener) -> None:
    """A contained Medication without a code: niraparib (PARP) + abiraterone (ARTA)."""
    medication = {
        "resourceType": "Medication", "id": "combo",
        "ingredient": [
            {"itemCodeableConcept": {"text": "niraparib"}},
            {"itemReference": {"reference": "#sub"}},
        ],
        "contained": [{"resourceType": "Substance", "id": "sub",
                       "code": {"text": "abiraterone acetate"}}],
    }  # fmt: skip
    statement = medication_statement(
        {"text": "unused"}, contained=[medication], medicationReference={"reference": "#combo"}
    )
    del statement["medicationCodeableConcept"]
    result = screen(screener, statement)
    excluded = result.criterion("prior-excluded-therapy")
    assert excluded.result is Result.MET and "niraparib" in excluded.reason
    assert "ingredient" in excluded.reason
    assert result.patient_type == 2  # abiraterone, ongoing


def test_an_old_arta_order_with_nothing_newer_is_said_and_still_makes_type_2(
    screener: Screener,
) -> None:
    adt = administration(LEUPROLIDE, "2026-10-01")  # a recent depot dose: the ADT is supported
    old_arta = request(ENZALUTAMIDE, "2021-04-01")
    data = record(condition(ADENOCARCINOMA), adt, old_arta)
    result = screener.screen(data, AS_OF)
    therapy = result.criterion("systemic-therapy")
    assert therapy.result is Result.MET and result.patient_type == 2
    assert "ARTA record" in therapy.reason and "2021-04-01" in therapy.reason
    assert "ADT record" not in therapy.reason
