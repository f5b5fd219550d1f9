"""The worklist as people use it, in a real browser (Debian's Chromium, headless, Playwright):
sign in through the local OpenID provider's page, see, filter and page the worklist, use it by
keyboard alone, no serious accessibility violation (axe-core), a wrong role and a forged CSRF
token told clearly. Writes docs/screenshots/worklist.png."""

from __future__ import annotations

import re
from typing import Any

from playwright.sync_api import Page

from tests.browser.conftest import Stack, sign_in
from tests.browser.stack import AXE, SCREENSHOTS

SESSION_COOKIE = "medcare_session"


def shown_total(page: Page) -> int:
    text = page.inner_text("#result-count")
    match = re.match(r"(\d+) results?", text)
    assert match, text
    return int(match.group(1))


def serious_violations(page: Page) -> list[dict[str, Any]]:
    assert AXE.exists(), "axe-core is missing: peers/oidc/build installs it"
    page.add_script_tag(path=str(AXE))
    found = page.evaluate("async () => (await axe.run(document)).violations")
    return [
        {"id": v["id"], "impact": v["impact"], "nodes": [n["target"] for n in v["nodes"]][:3]}
        for v in found
        if v["impact"] in ("serious", "critical")
    ]


def test_sign_in_see_filter_and_page_the_worklist(page: Page, stack: Stack) -> None:
    sign_in(page, stack, "coordinator")
    assert page.url.startswith(stack.base_url + "/worklist"), page.url
    assert page.inner_text("h1") == "Worklist"
    assert "Casey Coordinator" in page.inner_text("header")
    cookie = next(c for c in page.context.cookies() if c["name"] == SESSION_COOKIE)
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"
    total = shown_total(page)
    assert total > 50, total  # the fixture patients fill more than one page
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "worklist.png"))

    page.select_option("#f-status", "ineligible")
    page.click("text=Apply filters")
    page.wait_for_url(re.compile(r"status=ineligible"))
    statuses = page.locator("tbody td:nth-child(2)").all_inner_texts()
    assert statuses and set(statuses) == {"Not eligible"}
    ineligible = shown_total(page)

    page.select_option("#f-status", "candidate")
    page.select_option("#f-missing", "some")
    page.click("text=Apply filters")
    page.wait_for_url(re.compile(r"missing=some"))
    rows = page.locator("tbody tr")
    assert rows.count() >= 1
    for n in range(rows.count()):
        assert rows.nth(n).locator("td:nth-child(4) li").count() >= 1  # something is missing

    page.click("text=Clear")
    page.wait_for_url(stack.base_url + "/worklist")
    assert shown_total(page) == total > ineligible
    page.click("text=Next page")
    page.wait_for_url(re.compile(r"page=2"))
    assert "Page 2 of" in page.inner_text("nav.pager")
    first_of_page_2 = page.locator("tbody th").first.inner_text()
    page.click("text=Previous page")
    page.wait_for_url(lambda url: "page=" not in url)
    assert first_of_page_2 not in page.locator("tbody").inner_text()

    page.click("thead >> text=Patient")  # sort by patient, ascending
    page.wait_for_url(re.compile(r"sort=patient"))
    assert page.locator("th[aria-sort=ascending]").inner_text().startswith("Patient")
    patients = page.locator("tbody th").all_inner_texts()
    assert patients == sorted(patients)


def test_the_worklist_by_keyboard_alone(page: Page, stack: Stack) -> None:
    sign_in(page, stack, "investigator")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to main content"
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"
    focused: list[str] = []
    for _ in range(12):  # Tab from the main region to the status filter
        page.keyboard.press("Tab")
        focused.append(page.evaluate("document.activeElement.id"))
        if focused[-1] == "f-status":
            break
    assert focused[-1] == "f-status", focused
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline != "none"  # the focus can be seen
    page.keyboard.press("ArrowDown")  # Any -> Candidate
    page.keyboard.press("ArrowDown")  # -> Not eligible
    for _ in range(12):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.textContent") == "Apply filters":
            break
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"status=ineligible"))
    for _ in range(20):  # on to the "Last changed" header's sort link
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.textContent").startswith("Last changed"):
            break
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"sort=changed"))
    assert "status=ineligible" in page.url


def test_no_serious_accessibility_violation(page: Page, stack: Stack) -> None:
    sign_in(page, stack, "coordinator")
    assert serious_violations(page) == []
    page.goto(stack.base_url + "/worklist?status=nonsense")  # the message page
    assert "Status must be one of" in page.inner_text("main")
    assert serious_violations(page) == []


def test_read_only_reads_and_an_unknown_role_is_refused(page: Page, stack: Stack) -> None:
    sign_in(page, stack, "readonly")
    assert page.inner_text("h1") == "Worklist" and "(read-only)" in page.inner_text("header")
    page.context.clear_cookies()
    sign_in(page, stack, "visitor")
    assert page.inner_text("h1") == "No access to MEDCARE Screen"
    assert "no MEDCARE Screen role" in page.inner_text("main")
    answer = page.request.get(stack.base_url + "/worklist", max_redirects=0)
    assert answer.status == 302  # nothing of the worklist without a role


def test_a_forged_csrf_token_is_told_and_changes_nothing(page: Page, stack: Stack) -> None:
    sign_in(page, stack, "coordinator")
    page.evaluate("document.querySelector('input[name=csrf_token]').value = 'forged'")
    page.click("text=Sign out")
    assert page.inner_text("h1") == "This form could not be accepted"
    assert "Nothing was changed" in page.inner_text("main")
    page.goto(stack.base_url + "/worklist")
    assert page.inner_text("h1") == "Worklist"  # still signed in
    page.click("text=Sign out")
    assert page.inner_text("h1") == "Signed out"
    answer = page.request.get(stack.base_url + "/worklist", max_redirects=0)
    assert answer.status == 302
