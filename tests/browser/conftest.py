"""Fixtures of the browser tests: the real stack (stack.py) once per session, a fresh browser
context (no cookies) per test, and signing in through the provider's own login page."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, sync_playwright

from bench.servers import stop
from tests.browser.stack import (
    CLIENT_ID,
    CLIENT_SECRET,
    SESSION_SECRET,
    TODAY,
    chromium_path,
    start_oidc,
    store_fixture_results,
)
from tests.reliability.harness import ServiceProcess, service_env


@dataclass(frozen=True)
class Stack:
    base_url: str
    issuer: str
    service: ServiceProcess


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    folder = tmp_path_factory.mktemp("browser")
    database_url = f"sqlite:///{folder / 'results.sqlite3'}"
    store_fixture_results(database_url)
    env = service_env(None, database_url, MEDCARE_TODAY=TODAY, MEDCARE_EMBEDDED_WORKER="false")
    service = ServiceProcess(env, folder / "service.log", workers=2, threads=4)
    peer = start_oidc(f"{service.base_url}/auth/callback", folder / "oidc.log")
    try:
        service.env.update(
            MEDCARE_OIDC_ISSUER=peer.issuer, MEDCARE_OIDC_CLIENT_ID=CLIENT_ID,
            MEDCARE_OIDC_CLIENT_SECRET=CLIENT_SECRET, MEDCARE_SESSION_SECRET=SESSION_SECRET,
        )  # fmt: skip
        with service:
            yield Stack(service.base_url, peer.issuer, service)
    finally:
        stop(peer.process)


@pytest.fixture(scope="session")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="session")
def browser(playwright: Playwright) -> Iterator[Browser]:
    browser = playwright.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
    yield browser
    browser.close()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    # bypass_csp: axe-core is injected as an inline script, which our pages' CSP forbids
    context = browser.new_context(viewport={"width": 1280, "height": 900}, bypass_csp=True)
    # the provider's development login page imports a web font; no outside network here
    context.route("https://fonts.googleapis.com/**", lambda route: route.abort())
    yield context
    context.close()


@pytest.fixture
def page(context: BrowserContext) -> Page:
    return context.new_page()


def sign_in(page: Page, stack: Stack, login: str, path: str = "/worklist") -> None:
    """Open `path`, get sent to the provider's login page, sign in as `login`, consent."""
    page.goto(stack.base_url + path)
    assert page.url.startswith(stack.issuer), page.url  # the provider's own page
    page.fill("input[name=login]", login)
    page.fill("input[name=password]", "any password")
    page.click("button[type=submit]")
    if page.url.startswith(stack.issuer) and page.locator("text=Continue").count():
        page.click("text=Continue")  # the provider asks for consent the first time
    page.wait_for_load_state()
