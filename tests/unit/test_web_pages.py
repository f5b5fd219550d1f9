"""The web pages through Flask's test client: sign-in required, the development sign-in,
CSRF on every POST, roles, the worklist's filters and bad input, the cookies' flags, and the
web settings' checks. The real sign-in (a real OpenID provider) and a real browser are in
tests/browser/."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from service.api import create_app
from service.clock import Clock
from service.runtime import Runtime
from service.settings import ConfigError
from service.store.repository import create_store
from service.web.config import web_config
from service.web.roles import Permission, Role, may, role_of
from tests.api.conftest import make_settings
from tests.unit.store.helpers import Clock as HandClock
from tests.unit.store.helpers import body, save


@pytest.fixture
def dev_app(tmp_path: Path) -> Iterator[Flask]:
    settings = make_settings(tmp_path, environment="development")
    runtime = Runtime(settings, start_workers=False)
    save(runtime.store, None, body("Patient/w-candidate"))
    missing = body("Patient/w-missing")
    missing["missing_data"] = ["castrate-testosterone"]
    save(runtime.store, None, missing)
    save(runtime.store, None, body("Patient/w-out", ruled_out_by=("deceased",)))
    yield create_app(settings, runtime)
    runtime.close()


def csrf_of(client: FlaskClient) -> str:
    with client.session_transaction() as session:
        token = session.get("csrf")
    assert isinstance(token, str)
    return token


def signed_in(app: Flask) -> FlaskClient:
    client = app.test_client()
    page = client.get("/auth/login")
    assert page.status_code == 200 and b"Development sign-in" in page.data
    answer = client.post("/auth/dev-sign-in", data={"csrf_token": csrf_of(client)})
    assert answer.status_code == 302 and answer.headers["Location"].endswith("/worklist")
    return client


def test_the_worklist_needs_sign_in_and_comes_back_after_it(dev_app: Flask) -> None:
    client = dev_app.test_client()
    answer = client.get("/worklist?status=candidate")
    assert answer.status_code == 302 and answer.headers["Location"].endswith("/auth/login")
    client.get("/auth/login")
    back = client.post("/auth/dev-sign-in", data={"csrf_token": csrf_of(client)})
    assert back.headers["Location"].endswith("/worklist?status=candidate")


def test_the_worklist_lists_filters_and_sorts_current_results(dev_app: Flask) -> None:
    client = signed_in(dev_app)
    page = client.get("/worklist").get_data(as_text=True)
    assert "3 results" in page and "Development sign-in" in page
    for patient in ("Patient/w-candidate", "Patient/w-missing", "Patient/w-out"):
        assert patient in page
    assert 'aria-sort="descending"' in page and 'href="#main"' in page
    only_out = client.get("/worklist?status=ineligible").get_data(as_text=True)
    assert "Patient/w-out" in only_out and "Patient/w-candidate" not in only_out
    missing = client.get("/worklist?missing=some").get_data(as_text=True)
    assert "Patient/w-missing" in missing and "castrate-testosterone" in missing
    assert "Patient/w-out" not in missing
    by_patient = client.get("/worklist?sort=patient&dir=asc").get_data(as_text=True)
    order = [by_patient.index(p) for p in ("w-candidate", "w-missing", "w-out")]
    assert order == sorted(order)
    future = client.get("/worklist?since=2099-01-01").get_data(as_text=True)
    assert "No current results match" in future
    paged = client.get("/worklist?size=25&page=2").get_data(as_text=True)
    assert "Page 2 of 1" in paged and "Previous page" in paged


def test_the_worklist_shows_and_filters_the_current_disposition(dev_app: Flask) -> None:
    client = signed_in(dev_app)
    client.get("/patients/w-out")  # draws the form (and its CSRF token)
    sent = client.post("/patients/w-out/disposition",
                       data={"csrf_token": csrf_of(client), "version": "0", "code": "deferred"})  # fmt: skip
    assert sent.status_code == 303
    page = client.get("/worklist").get_data(as_text=True)
    assert 'id="f-disposition"' in page and "Deferred" in page
    deferred = client.get("/worklist?disposition=deferred").get_data(as_text=True)
    assert "Patient/w-out" in deferred and "Patient/w-candidate" not in deferred
    undecided = client.get("/worklist?disposition=new").get_data(as_text=True)
    assert "Patient/w-candidate" in undecided and "Patient/w-out" not in undecided
    by_disposition = client.get("/worklist?sort=disposition&dir=asc").get_data(as_text=True)
    assert by_disposition.index("w-out") < by_disposition.index("w-candidate")


@pytest.mark.parametrize(
    ("query", "says"),
    [("status=maybe", "Status must be"), ("since=26.11.2026", "Changed since must be a date"),
     ("page=0", "Page must be"), ("size=7", "Rows per page"), ("sort=name", "Sort must be"),
     ("page=" + "9" * 300, "Page must be"), ("disposition=maybe", "Disposition must be")],
)  # fmt: skip
def test_a_bad_filter_gets_a_clear_page(dev_app: Flask, query: str, says: str) -> None:
    answer = signed_in(dev_app).get("/worklist?" + query)
    assert answer.status_code == 400
    assert says in answer.get_data(as_text=True) and "Traceback" not in answer.get_data(
        as_text=True
    )


def test_a_forged_csrf_token_changes_nothing(dev_app: Flask) -> None:
    client = signed_in(dev_app)
    for forged in ({"csrf_token": "forged"}, {}):
        answer = client.post("/auth/logout", data=forged)
        assert answer.status_code == 400
        assert "Nothing was changed" in answer.get_data(as_text=True)
    assert client.get("/worklist").status_code == 200  # still signed in
    assert client.post("/auth/logout", data={"csrf_token": csrf_of(client)}).status_code == 200
    assert client.get("/worklist").status_code == 302


def test_an_unknown_role_in_the_session_is_no_sign_in(dev_app: Flask) -> None:
    client = dev_app.test_client()
    with client.session_transaction() as session:
        session["user"] = {"sub": "v", "name": "V", "role": "visitor"}
    assert client.get("/worklist").status_code == 302


def test_cookies_are_http_only_lax_and_secure_outside_loopback_development(dev_app: Flask) -> None:
    client = dev_app.test_client()
    local = client.get("/auth/login").headers["Set-Cookie"]
    assert "HttpOnly" in local and "SameSite=Lax" in local and "Secure" not in local
    remote = dev_app.test_client().get("/auth/login", base_url="http://medcare.example.org")
    assert "Secure" in remote.headers["Set-Cookie"]
    headers = client.get("/auth/login").headers
    assert "default-src 'self'" in headers["Content-Security-Policy"]


def test_pages_use_only_our_own_assets(dev_app: Flask) -> None:
    page = signed_in(dev_app).get("/worklist").get_data(as_text=True)
    assert "http://" not in page and "https://" not in page
    css = dev_app.test_client().get("/web/static/web.css")
    assert css.status_code == 200 and b"focus-visible" in css.data
    css.close()


def test_roles_from_the_claim() -> None:
    assert role_of("coordinator") is Role.COORDINATOR
    assert role_of(["other", "read-only"]) is Role.READ_ONLY
    assert role_of("visitor") is None and role_of(None) is None
    assert may(Role.READ_ONLY, Permission.READ) and not may(Role.READ_ONLY, Permission.RECORD)


@pytest.mark.parametrize(
    ("overrides", "says"),
    [({"oidc_issuer": "https://idp"}, "MEDCARE_OIDC_CLIENT_ID"),
     ({"oidc_issuer": "https://idp", "oidc_client_id": "c"}, "MEDCARE_OIDC_CLIENT_SECRET"),
     ({"oidc_issuer": "http://idp.example.org", "oidc_client_id": "c", "oidc_client_secret": "s",
       "session_secret": "k" * 32}, "must be https"),
     ({"oidc_issuer": "https://idp", "oidc_client_id": "c", "oidc_client_secret": "s"},
      "MEDCARE_SESSION_SECRET"),
     ({"session_secret": "short"}, "at least 32")],
)  # fmt: skip
def test_web_settings_are_checked_at_start(
    tmp_path: Path, overrides: dict[str, object], says: str
) -> None:
    with pytest.raises(ConfigError, match=says):
        web_config(make_settings(tmp_path, **overrides))


def test_production_without_a_provider_says_sign_in_is_not_configured(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    runtime = Runtime(settings, start_workers=False)
    try:
        client = create_app(settings, runtime).test_client()
        answer = client.get("/auth/login")
        assert answer.status_code == 503 and b"MEDCARE_OIDC_ISSUER" in answer.data
        assert client.post("/auth/dev-sign-in").status_code == 400  # no token: refused first
    finally:
        runtime.close()


def test_new_since_my_last_visit(tmp_path: Path) -> None:
    """A load more than 30 minutes after the last one is a new visit: results whose decision
    changed since the visit before are marked New, and `new=1` shows only those."""
    moving = HandClock()
    clock = Clock(source=moving, pinned_today=date(2026, 11, 26))
    settings = make_settings(tmp_path, environment="development")
    runtime = Runtime(
        settings, start_workers=False, clock=clock,
        store=create_store(settings.database_url, clock=clock),
    )  # fmt: skip
    try:
        save(runtime.store, None, body("Patient/old"))
        client = signed_in(create_app(settings, runtime))
        first = client.get("/worklist").get_data(as_text=True)
        assert "This is your first visit" in first and ">New<" not in first
        moving.advance(minutes=10)
        assert "first visit" in client.get("/worklist?page=1").get_data(as_text=True)  # same visit
        moving.advance(hours=3)
        save(runtime.store, None, body("Patient/fresh"))
        moving.advance(minutes=1)
        again = client.get("/worklist").get_data(as_text=True)
        assert "Your last visit" in again and again.count(">New<") == 1
        only_new = client.get("/worklist?new=1").get_data(as_text=True)
        assert "Patient/fresh" in only_new and "Patient/old" not in only_new
        moving.advance(minutes=5)  # the same visit: still new
        assert "Patient/fresh" in client.get("/worklist?new=1").get_data(as_text=True)
    finally:
        runtime.close()
