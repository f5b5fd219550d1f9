"""/metrics under gunicorn counts every worker's requests (issue 14 item 6).

Before: each scrape reached one worker and showed that worker's counters (81, then 155, then
81). `serve` now gives prometheus_client a multiprocess directory, so any worker's scrape adds
up all of them: the counts only grow, and equal what was sent.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import requests

from tests.reliability import harness

pytestmark = pytest.mark.timeout(180)

LIVE = re.compile(
    r'^medcare_http_requests_total\{endpoint="health.live",method="GET",status="200"\} (\S+)$',
    re.MULTILINE,
)
SCRAPES = 30


def test_every_scrape_sees_the_total_of_all_workers(tmp_path: Path) -> None:
    env = harness.service_env(
        None,
        f"sqlite:///{tmp_path / 'metrics.sqlite3'}",
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "metrics"),
    )
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "counter_stale.db").write_bytes(b"")  # a previous run's: removed
    seen: list[int] = []
    with harness.ServiceProcess(env, tmp_path / "serve.log", workers=3, threads=2) as service:
        refused = requests.post(f"{service.base_url}/v1/notifications", json={}, timeout=10)
        assert refused.status_code == 401  # no MEDCARE_NOTIFY_SECRET: counted as refused
        sent = 0
        with requests.Session() as session:
            for _ in range(SCRAPES):
                for _ in range(3):  # new connections: gunicorn spreads them over the workers
                    assert requests.get(f"{service.base_url}/health/live", timeout=10).ok
                    sent += 1
                text = session.get(f"{service.base_url}/metrics", timeout=10).text
                found = LIVE.search(text)
                assert found is not None, text[:2000]
                seen.append(int(float(found.group(1))))
                assert seen[-1] == sent, (seen, sent)
        assert "medcare_rescreen_queue_depth" in text
        assert 'medcare_notifications_total{outcome="refused",reason="not-configured"} 1.0' in text
    assert seen == sorted(seen)
    harness.record(
        "metrics: scrapes of a 3-worker gunicorn",
        scrapes=SCRAPES, counts=f"{seen[0]}..{seen[-1]}", monotonic=True,
    )  # fmt: skip
