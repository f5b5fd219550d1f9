"""The ResearchStudy: created once with https://clinicaltrials.gov, found under either system."""

from __future__ import annotations

from typing import Any

from fhir.resources.R4B.researchstudy import ResearchStudy

from service.mapping.model import Parameters
from service.writeback.study import (
    build_research_study,
    pick_study,
    study_if_none_exist,
    study_search_params,
)


def _study(resource_id: str, *identifiers: tuple[str, str]) -> dict[str, Any]:
    return {
        "resourceType": "ResearchStudy",
        "id": resource_id,
        "status": "active",
        "identifier": [{"system": s, "value": v} for s, v in identifiers],
    }


def _searchset(*resources: dict[str, Any], mode: str = "match") -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"resource": r, "search": {"mode": mode}} for r in resources],
    }


def test_research_study_is_valid_r4(params: Parameters) -> None:
    study = build_research_study(params)
    parsed = ResearchStudy.model_validate(study)
    assert parsed.model_dump(mode="json", exclude_none=True) == study
    assert study["identifier"] == [{"system": "https://clinicaltrials.gov", "value": "NCT06585007"}]
    assert study["status"] == "active"
    assert study["title"].startswith("MEDCARE")


def test_conditional_create_and_search_parameters(params: Parameters) -> None:
    assert study_if_none_exist(params) == "identifier=https://clinicaltrials.gov|NCT06585007"
    assert study_search_params(params) == {"identifier": "NCT06585007"}


def test_pick_study_accepts_both_clinicaltrials_systems(params: Parameters) -> None:
    https = _study("1", ("https://clinicaltrials.gov", "NCT06585007"))
    http = _study("2", ("http://clinicaltrials.gov", "NCT06585007"))
    assert pick_study(_searchset(https), params) == https
    assert pick_study(_searchset(http), params) == http
    # trailing slash tolerated; the preferred system wins over the alias whatever the order
    slash = _study("3", ("https://clinicaltrials.gov/", "NCT06585007"))
    assert pick_study(_searchset(slash), params) == slash
    assert pick_study(_searchset(http, https), params) == https


def test_pick_study_ignores_other_registries_and_other_resources(params: Parameters) -> None:
    other = _study("4", ("urn:oid:1.2.3", "NCT06585007"))
    wrong_value = _study("5", ("https://clinicaltrials.gov", "NCT00000000"))
    included = _study("6", ("https://clinicaltrials.gov", "NCT06585007"))
    outcome = {"resourceType": "OperationOutcome", "issue": []}
    searchset = {
        **_searchset(other, wrong_value),
        "entry": [
            *_searchset(other, wrong_value)["entry"],
            {"resource": included, "search": {"mode": "include"}},
            {"resource": outcome, "search": {"mode": "outcome"}},
        ],
    }
    assert pick_study(searchset, params) is None
    assert pick_study({"resourceType": "Bundle", "type": "searchset"}, params) is None


def test_pick_study_is_deterministic_among_equals(params: Parameters) -> None:
    first = _study("10", ("http://clinicaltrials.gov", "NCT06585007"))
    second = _study("11", ("http://clinicaltrials.gov", "NCT06585007"))
    assert pick_study(_searchset(second, first), params) == first
    # a study with both systems counts by its best one
    both = _study(
        "12",
        ("urn:x", "1"),
        ("http://clinicaltrials.gov", "NCT06585007"),
        ("https://clinicaltrials.gov", "NCT06585007"),
    )
    assert pick_study(_searchset(first, both), params) == both
