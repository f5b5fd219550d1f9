"""The reports behind the worklist's links, for people signed in with a session (issue 15
item 5): the site's identified screening log for those who may record, the sponsor's
de-identified log and the funnel for anyone signed in; the same CSV as the API gives."""

from __future__ import annotations

from flask import Flask

from service.reports.screening_log import COLUMNS
from tests.unit.test_web_pages import dev_app, signed_in

__all__ = ["dev_app"]  # the fixture, used by name


def test_a_coordinator_downloads_the_site_log_and_the_sponsor_log(dev_app: Flask) -> None:
    client = signed_in(dev_app)
    worklist = client.get("/worklist").get_data(as_text=True)
    assert "/reports/screening-log.csv?audience=site" in worklist
    site = client.get("/reports/screening-log.csv?audience=site")
    assert site.status_code == 200 and site.mimetype == "text/csv"
    assert 'filename="screening-log-site.csv"' in site.headers["Content-Disposition"]
    lines = site.get_data(as_text=True).splitlines()
    assert lines[0].split(",")[:2] == ["screening_number", "patient_id"]
    assert "Patient/w-out" in site.get_data(as_text=True)
    sponsor = client.get("/reports/screening-log.csv").get_data(as_text=True)
    assert sponsor.splitlines()[0] == ",".join(COLUMNS)
    assert "Patient/" not in sponsor and "w-out" not in sponsor
    funnel = client.get("/reports/funnel.svg")
    assert funnel.status_code == 200 and funnel.mimetype == "image/svg+xml"


def test_read_only_gets_the_sponsor_log_only_and_a_bad_audience_is_told(dev_app: Flask) -> None:
    client = signed_in(dev_app)
    with client.session_transaction() as session:
        session["user"] = {"sub": "r", "name": "R", "role": "read-only"}
    assert "audience=site" not in client.get("/worklist").get_data(as_text=True)
    refused = client.get("/reports/screening-log.csv?audience=site")
    assert refused.status_code == 403 and "Patient/" not in refused.get_data(as_text=True)
    assert client.get("/reports/screening-log.csv?audience=sponsor").status_code == 200
    bad = client.get("/reports/screening-log.csv?audience=everyone")
    assert bad.status_code == 400 and "must be one of" in bad.get_data(as_text=True)


def test_the_reports_need_a_sign_in(dev_app: Flask) -> None:
    answer = dev_app.test_client().get("/reports/screening-log.csv?audience=sponsor")
    assert answer.status_code == 302 and answer.headers["Location"].endswith("/auth/login")
