"""The trial team's reports (issue 15 item 5): the funnel picture of the current population and
the screening log, identified for the site and de-identified for the sponsor."""

from __future__ import annotations

import csv
import io
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.dispositions import Reviews
from service.reports.funnel import funnel_svg
from service.reports.screening_log import Audience, safe_cell, screening_log_csv
from service.store.reports import funnel
from service.store.repository import Store, create_store
from tests.unit.store.helpers import STUDY, Clock, body, save

SVG = "{http://www.w3.org/2000/svg}"
FULL_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
CANDIDATES = ("Patient/zq-alpha-17", "Patient/zq-bravo-23", "Patient/zq-charlie-31")
RULED_OUT = {"Patient/zq-delta-47": ("age",), "Patient/zq-echo-59": ("age",),
             "Patient/zq-foxtrot-61": ("deceased",)}  # fmt: skip


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = create_store(f"sqlite:///{tmp_path / 'reports.sqlite3'}", clock=Clock())
    store.migrate()
    for patient in CANDIDATES:
        save(store, None, body(patient))
    for patient, criteria in RULED_OUT.items():
        save(store, None, body(patient, ruled_out_by=criteria))
    reviews = Reviews(store, STUDY)
    reviews.set_disposition("zq-alpha-17", 0, code="enrolled", author="alice")
    reviews.set_disposition("zq-bravo-23", 0, code="declined", author="alice",
                            reason="=HYPERLINK(\"http://evil\")")  # fmt: skip
    reviews.set_disposition("zq-delta-47", 0, code="under-review", author="bob")
    reviews.set_disposition("zq-delta-47", 1, code="not-eligible", author="bob", reason="age")
    yield store
    store.close()


def _rows(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


def test_the_funnel_svg_has_the_summary_numbers_labels_and_a_title(store: Store) -> None:
    bodies = [row.body for row in store.current_population(STUDY)]
    attrition = funnel(bodies, 0)
    root = ET.fromstring(funnel_svg(bodies))
    assert root.tag == f"{SVG}svg" and root.get("role") == "img"
    assert root.findtext(f"{SVG}title") == "MEDCARE pre-screening attrition funnel"
    assert "Candidates: 3 left" in (root.findtext(f"{SVG}desc") or "")
    steps = root.findall(f"{SVG}g")
    labels = [step.findall(f"{SVG}text")[0].text for step in steps]
    lefts = [int(step.get("data-left", "-1")) for step in steps]
    assert labels[0] == "Screened (current results)" and labels[-1] == "Candidates"
    assert lefts[0] == 6 and lefts[-1] == attrition["candidate"] == 3
    expected = [c["left"] for c in attrition["criteria"]]
    assert lefts[1:-1] == expected and len(labels) == len(attrition["criteria"]) + 2
    age = next(i for i, c in enumerate(attrition["criteria"], 1) if c["id"] == "age")
    assert labels[age] == "age (inclusion)" and steps[age].get("data-ruled-out") == "2"
    assert steps[age].findall(f"{SVG}text")[1].text == f"{lefts[age]} left, 2 ruled out"
    assert not list(root.iter(f"{SVG}script")) and "href" not in ET.tostring(root, "unicode")


def test_the_sponsor_log_has_no_ids_no_days_and_hides_small_counts(store: Store) -> None:
    text = screening_log_csv(store.current_population(STUDY), Audience.SPONSOR)
    for patient in (*CANDIDATES, *RULED_OUT):
        assert patient.removeprefix("Patient/") not in text
    assert not FULL_DATE.search(text), "a date finer than a month"
    assert "HYPERLINK" not in text, "the coordinator's free text stays at the site"
    rows = _rows(text)
    assert rows[0][:3] == ["screening_number", "date_screened", "patient_type"]
    lines = rows[1 : rows.index([])]
    assert [line[0] for line in lines] == [f"S{n:05d}" for n in range(1, 7)]
    assert {line[1] for line in lines} == {"2026-11"}
    assert {tuple(line[3:5]) for line in lines if line[3] == "ineligible"} == {
        ("ineligible", "age"), ("ineligible", "deceased"),
    }  # fmt: skip
    summary = {(r[1], r[2]): r[3] for r in rows[rows.index([]) + 2 :]}
    assert summary[("screened", "all")] == "6"
    assert summary[("eligibility_status", "candidate")] == "<5"
    assert summary[("disposition", "none recorded")] == "<5"
    assert summary[("enrolled", "no")] == "5" and summary[("enrolled", "yes")] == "<5"
    enrolled = [line for line in lines if line[7] == "yes"]
    assert len(enrolled) == 1 and enrolled[0][5:7] == ["enrolled", "2026-11"]
    assert [line[8] for line in lines if line[5] == "declined"] == ["declined"]


def test_the_site_log_is_identified_and_safe_in_a_spreadsheet(store: Store) -> None:
    rows = _rows(screening_log_csv(store.current_population(STUDY), Audience.SITE))
    assert rows[0][:3] == ["screening_number", "patient_id", "date_screened"]
    lines = {line[1]: line for line in rows[1 : rows.index([])]}
    assert set(lines) == {*CANDIDATES, *RULED_OUT}
    assert lines["Patient/zq-alpha-17"][2] == "2026-11-26"
    assert lines["Patient/zq-alpha-17"][7] == "2026-11-26"  # the disposition's day
    assert lines["Patient/zq-bravo-23"][9] == '\'=HYPERLINK("http://evil")'
    assert lines["Patient/zq-delta-47"][6:10] == ["not-eligible", "2026-11-26", "no", "age"]
    summary = {(r[1], r[2]): r[3] for r in rows[rows.index([]) + 2 :]}
    assert summary[("eligibility_status", "candidate")] == "3"


@pytest.mark.parametrize("value", ["=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx"])
def test_a_cell_a_spreadsheet_would_run_is_prefixed(value: str) -> None:
    assert safe_cell(value) == "'" + value
    assert safe_cell("age") == "age" and safe_cell("") == ""


def test_the_population_is_the_current_results_with_the_newest_disposition(store: Store) -> None:
    rows = {row.patient: row for row in store.current_population(STUDY)}
    assert len(rows) == 6 and rows["Patient/zq-charlie-31"].disposition is None
    delta = rows["Patient/zq-delta-47"].disposition
    assert delta is not None and (delta.code, delta.reason) == ("not-eligible", "age")
    save(store, None, body("Patient/zq-delta-47"))  # a re-screen keeps the disposition
    again = {row.patient: row for row in store.current_population(STUDY)}
    assert again["Patient/zq-delta-47"].body["status"] == "candidate"
    assert again["Patient/zq-delta-47"].disposition == delta
    assert store.current_population("another-study") == []
