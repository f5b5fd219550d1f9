"""The funnel in tiers (issue 12 item 10): ready for the board, data to chase, ineligible, and
the spread of each stratum among candidates, on the command line (the API: tests/api)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from service.cli import main
from service.report import Report, Tiers, tiers_of
from service.screening.engine import Screener
from tests.builders import SCT, concept, condition, record
from tests.conftest import AS_OF, SYNTHEA


def body(status: str, missing: list[str], metastases: str | None) -> dict[str, Any]:
    strata = {"metastases": metastases, "localization": None, "systemic_therapy": "type-2"}
    return {"status": status, "missing_data": missing, "strata": strata}


def test_tiers_split_candidates_by_what_is_missing() -> None:
    tiers = tiers_of(
        [
            body("candidate", [], "1"),
            body("candidate", ["castrate-testosterone"], ">1"),
            body("candidate", ["oligoprogression"], None),
            body("ineligible", [], "1"),
            None,  # not screened (failed): not counted
        ]
    )
    summary = tiers.to_dict()
    assert summary["ready_for_board"] == 1
    assert summary["candidate_data_to_chase"] == 2
    assert summary["ineligible"] == 1
    assert summary["strata_among_candidates"]["metastases"] == {"1": 1, ">1": 1, "not known": 1}
    assert summary["strata_among_candidates"]["systemic_therapy"] == {"type-2": 3}


def test_report_counts_tiers_from_results(screener: Screener) -> None:
    report = Report()
    results = [
        screener.screen(record(condition(concept(SCT, "399490008"))), AS_OF),
        screener.screen(record(), AS_OF),
    ]
    for result in results:
        report.add(result)
    expected = Tiers()
    for result in results:
        expected.add_body(result.to_dict())
    assert report.tiers.to_dict() == expected.to_dict()
    assert (
        "Ready for the board" in report.summary() and "Strata among candidates" in report.summary()
    )


def test_cli_summary_shows_the_tiers(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["screen", "--source", str(SYNTHEA), "--as-of", "2026-11-26", "--summary",
                 "--format", "json"])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0
    results = [json.loads(line) for line in captured.out.splitlines() if line.startswith("{")]
    expected = tiers_of(results)
    text = captured.out + captured.err
    assert f"Ready for the board (candidate, nothing missing): {expected.ready}" in text
    assert f"Candidate, data to chase: {expected.chase}" in text
    assert f"Ineligible: {expected.ineligible}" in text
