"""The patient page as coordinators use it, in a real browser (issue 15 items 2 and 3): open a
patient from the worklist, record a disposition and a manual answer, see both survive a
re-screen (POST /v1/screen on the running service), find the patient by its disposition on the
worklist and export the screening log (the site's and the sponsor's, downloaded), a second
tab's stale form told with its note kept, and no serious accessibility violation (axe-core).
Writes docs/screenshots/patient.png."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import requests
from playwright.sync_api import Page

from tests.browser.conftest import Stack, sign_in
from tests.browser.stack import SCREENSHOTS
from tests.browser.test_worklist import serious_violations
from tests.reliability.harness import TOKEN

PATIENT = "fx-base"


def record_disposition(page: Page, code: str, note: str, *, stale: bool = False) -> None:
    """Choose the disposition, then by keyboard alone: type the note, Tab to the button, Enter."""
    page.select_option("#code", code)
    page.focus("#note")
    page.keyboard.type(note)
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Record disposition"
    page.keyboard.press("Enter")
    if stale:
        page.wait_for_load_state()
    else:
        page.wait_for_url(re.compile(r"#review$"))


def test_record_a_disposition_and_an_answer_that_survive_a_rescreen(
    page: Page, stack: Stack
) -> None:
    sign_in(page, stack, "coordinator", "/worklist?sort=patient&dir=asc&size=100")
    page.click(f'a[href="/patients/{PATIENT}"]')
    page.wait_for_url(re.compile(f"/patients/{PATIENT}$"))
    assert page.inner_text("h1") == f"Patient {PATIENT}"
    assert "Criteria (21)" in page.inner_text("main")
    assert serious_violations(page) == []

    record_disposition(page, "presented-to-board", "board on Thursday")
    page.select_option("#answer-tumour-board", "met")
    page.fill("#note-tumour-board", "approved by the board")
    page.click("text=Record answer for tumour-board")
    page.wait_for_load_state()

    screened = requests.post(
        stack.base_url + "/v1/screen", json={"patient": PATIENT},
        headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60,
    )  # fmt: skip
    assert screened.status_code == 200, screened.text
    page.goto(stack.base_url + f"/patients/{PATIENT}")
    main = page.inner_text("main")
    assert "Presented to board (" in main and "board on Thursday" in main
    assert "approved by the board" in main and "answered: Met" in main
    assert serious_violations(page) == []
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "patient.png"), full_page=True)
    export_the_log(page, stack)


def export_the_log(page: Page, stack: Stack) -> None:
    """From the worklist filtered by the disposition just recorded, download both logs: the
    site's names the patient and its disposition, the sponsor's names no patient at all."""
    page.goto(stack.base_url + "/worklist")
    page.select_option("#f-disposition", "presented-to-board")
    page.click("text=Apply filters")
    page.wait_for_url(re.compile(r"disposition=presented-to-board"))
    rows = page.locator("table.worklist tbody tr")
    assert rows.count() == 1 and PATIENT in rows.inner_text()
    assert "Presented to board" in rows.inner_text()
    site = download(page, "Screening log")
    assert site[0][:2] == ["screening_number", "patient_id"]
    ours = [line for line in site if len(line) > 1 and line[1] == f"Patient/{PATIENT}"]
    assert len(ours) == 1 and "presented-to-board" in ours[0]
    ids = {line[1] for line in site[1:] if len(line) > 1 and line[1].startswith("Patient/")}
    sponsor = download(page, "Screening log for the sponsor")
    assert sponsor[0][:2] == ["screening_number", "date_screened"]
    text = "\n".join(",".join(line) for line in sponsor)
    assert len(ids) > 5 and not any(i.removeprefix("Patient/") in text for i in ids)


def download(page: Page, link: str) -> list[list[str]]:
    """Click the worklist's link by its exact name and read the CSV the browser saved."""
    with page.expect_download() as started:
        page.get_by_role("link", name=link, exact=True).click()
    saved = started.value.path()
    return list(csv.reader(Path(saved).read_text(encoding="utf-8").splitlines()))


def test_a_stale_form_in_a_second_tab_is_told_and_keeps_the_note(page: Page, stack: Stack) -> None:
    sign_in(page, stack, "investigator", f"/patients/{PATIENT}")
    other = page.context.new_page()
    other.goto(stack.base_url + f"/patients/{PATIENT}")
    record_disposition(page, "contacted", "phoned")
    record_disposition(other, "deferred", "call again in May", stale=True)
    assert "Nothing of yours was recorded" in other.inner_text("[role=alert]")
    assert other.input_value("#note") == "call again in May"
    page.reload()
    assert "Contacted (" in page.inner_text("main")


def test_read_only_sees_the_page_without_forms(page: Page, stack: Stack) -> None:
    sign_in(page, stack, "readonly", f"/patients/{PATIENT}")
    assert page.inner_text("h1") == f"Patient {PATIENT}"
    assert page.locator("text=Record disposition").count() == 0
