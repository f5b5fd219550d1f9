"""GET /v1/runs/{id}/summary carries the funnel in tiers (issue 12 item 10)."""

from __future__ import annotations

import time

from flask.testing import FlaskClient

from service.report import tiers_of
from tests.api.conftest import AUTH


def test_run_summary_has_tiers(client: FlaskClient) -> None:
    patients = ["fx-base", "fx-age-17", "fx-testo-stale"]
    started = client.post(
        "/v1/runs", json={"patients": patients, "as_of": "2026-11-26"}, headers=AUTH
    )
    assert started.status_code == 202
    location = started.headers["Location"]
    deadline = time.monotonic() + 60
    run = client.get(location, headers=AUTH).get_json()
    while run["status"] not in ("done", "failed") and time.monotonic() < deadline:
        time.sleep(0.05)
        run = client.get(location, headers=AUTH).get_json()
    assert run["status"] == "done"
    page = client.get(run["links"]["results"] + "?limit=100", headers=AUTH).get_json()
    expected = tiers_of(item["result"] for item in page["items"]).to_dict()
    summary = client.get(run["links"]["summary"], headers=AUTH).get_json()
    assert summary["tiers"] == expected
    assert (
        expected["ready_for_board"] + expected["candidate_data_to_chase"]
        == run["progress"]["candidate"]
    )
