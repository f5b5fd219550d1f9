"""Readiness names a resource type whose sweep has not run for too long (issue 14 item 6)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from service.api import create_app
from service.clock import Clock
from service.runtime import Runtime
from service.store import create_store
from tests.api.conftest import make_settings


def test_a_sweep_older_than_its_max_age_makes_the_service_not_ready(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, sweep_interval_s=60, embedded_worker=False)
    now = [datetime.now(UTC)]
    clock = Clock(source=lambda: now[0])
    store = create_store(settings.database_url, clock=clock, today=settings.today)
    runtime = Runtime(settings, store=store, start_workers=False, clock=clock)
    try:
        client = create_app(settings, runtime).test_client()
        assert client.get("/health/ready").status_code == 200  # never swept yet: a fresh start
        runtime.store.advance_watermark("Observation", datetime(2026, 11, 26, tzinfo=UTC))
        runtime.store.advance_watermark("Condition", datetime(2026, 11, 26, tzinfo=UTC))
        fresh = client.get("/health/ready")
        assert fresh.status_code == 200
        assert "stale_sweeps" not in fresh.get_json()

        now[0] += timedelta(seconds=3 * 60 + 30)  # past 3 intervals: 180 s by default
        runtime.store.advance_watermark("Condition", datetime(2026, 11, 27, tzinfo=UTC))
        stale = client.get("/health/ready")
        assert stale.status_code == 503
        assert stale.get_json()["checks"]["sweeps"] is False
        assert stale.get_json()["stale_sweeps"] == ["Observation"]
    finally:
        runtime.close()
