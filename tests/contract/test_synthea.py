"""Real data nobody here wrote: the 20 Synthea patients of ../shared/external/synthea/."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest

from service.fhir.dates import parse_fhir_day
from service.fhir.local_source import LocalSource
from service.screening.engine import Screener
from service.screening.result import Result, ScreenResult, Status
from tests.conftest import AS_OF, SHARED, SYNTHEA
from tests.contract.contract_schema import check_contract

# Labels from ../shared/external/SOURCES.md (the 5 male patients without prostate cancer).
NEGATIVES = {"Paris_Jaskolski", "Tracey_Witting", "Trey_Leffler", "Micah_Schinner", "Shane_Jast"}
FILES = sorted(SYNTHEA.glob("*.json"))


def _name(path: Path) -> str:
    return "_".join(path.stem.split("_")[:2])


@pytest.fixture(scope="module")
def screened(screener: Screener) -> dict[str, tuple[ScreenResult, dict[str, object]]]:
    results = {}
    for path in FILES:
        (record,) = LocalSource(path).records()
        results[_name(path)] = (screener.screen(record, AS_OF), record.patient or {})
    return results


def test_the_shared_data_is_there() -> None:
    assert (SHARED / "external" / "SOURCES.md").is_file()
    assert len(FILES) == 20


def test_all_twenty_screen_and_follow_the_contract(
    screened: dict[str, tuple[ScreenResult, dict[str, object]]],
) -> None:
    assert len(screened) == 20
    for result, _ in screened.values():
        check_contract(result.to_dict())
        assert all(c.reason.strip() for c in result.criteria)


def test_patients_without_prostate_cancer_are_ineligible_through_histology(
    screened: dict[str, tuple[ScreenResult, dict[str, object]]],
) -> None:
    for name, (result, _) in screened.items():
        histology = result.criterion("histology")
        if name in NEGATIVES:
            assert result.status is Status.INELIGIBLE, name
            assert histology.result is Result.NOT_MET, name
        else:
            # Synthea codes 126906006 "neoplasm of prostate": prostate cancer without histology
            assert histology.result is Result.UNKNOWN, name
            assert "without histology" in histology.reason


def test_patients_who_died_before_as_of_are_ineligible_through_deceased(
    screened: dict[str, tuple[ScreenResult, dict[str, object]]],
) -> None:
    died = 0
    for name, (result, patient) in screened.items():
        death = parse_fhir_day(patient.get("deceasedDateTime"))
        deceased = result.criterion("deceased")
        if death is not None and death.latest <= AS_OF:
            died += 1
            assert deceased.result is Result.MET and result.status is Status.INELIGIBLE, name
            assert str(death) in deceased.reason
        else:
            assert deceased.result is Result.NOT_MET, name
    assert died == 16


def test_a_screen_as_of_a_past_day_sees_the_patient_alive(screener: Screener) -> None:
    """Don Moore died on 2019-05-21: as of 2019-01-01 he was alive, and data after that is ignored."""
    path = next(p for p in FILES if p.name.startswith("Don_Moore"))
    (record,) = LocalSource(path).records()
    result = screener.screen(record, date(2019, 1, 1))
    assert result.criterion("deceased").result is Result.NOT_MET
    assert json.dumps(result.to_dict())  # serialisable
