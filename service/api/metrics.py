"""Prometheus metrics: requests and notifications counted in this process, the state of the
work read from the database at each scrape.

Why two sources: a scrape reaches one gunicorn worker, yet must see the whole service.
- What happens in a request (HTTP requests, their latency, notifications received or refused)
  is counted by prometheus_client, in its multiprocess mode under gunicorn (`serve` sets
  PROMETHEUS_MULTIPROC_DIR, see service/metrics_dir.py): every worker writes its own
  file and each scrape adds them all up, so the counts are totals and never go back.
- What the work is (re-screen queue depth, age of the oldest pending change, last sweep per
  resource type, results changed, write-back outbox) happens in `worker` processes too, on
  other hosts: it is read from the database the processes share, so every worker and replica
  answers the same figures (ids never; counts only).

Labels are endpoint names, status codes, triggers and resource types only: never a patient id.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from flask import Flask, Response, current_app, g, request
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.multiprocess import MultiProcessCollector
from sqlalchemy import func, select

from service.api.deps import runtime, service
from service.store import Store
from service.store.models import StoredResult

METRICS = "medcare_metrics"  # the app.extensions key of this app's counters


@dataclass(frozen=True)
class AppMetrics:
    """This app's counters (one registry per app: tests build many apps in one process)."""

    registry: CollectorRegistry
    requests: Counter
    latency: Histogram
    notifications: Counter


def _metrics(registry: CollectorRegistry) -> AppMetrics:
    return AppMetrics(
        registry,
        Counter(
            "medcare_http_requests", "HTTP requests", ["endpoint", "method", "status"],
            registry=registry,
        ),
        Histogram(
            "medcare_http_request_seconds", "HTTP request latency", ["endpoint"],
            registry=registry,
        ),
        Counter(
            "medcare_notifications",
            "FHIR Subscription notifications: outcome accepted|refused, reason of a refusal",
            ["outcome", "reason"], registry=registry,
        ),
    )  # fmt: skip


def count_notification(outcome: str, reason: str) -> None:
    """One notification received: `outcome` accepted or refused, `reason` why refused."""
    metrics: AppMetrics = current_app.extensions[METRICS]
    metrics.notifications.labels(outcome, reason).inc()


def register_metrics(app: Flask) -> None:
    metrics = _metrics(CollectorRegistry())
    app.extensions[METRICS] = metrics

    @app.before_request
    def _start_timer() -> None:
        g.started = time.perf_counter()

    @app.after_request
    def _observe(response: Response) -> Response:
        endpoint = request.endpoint or "unmatched"
        metrics.requests.labels(endpoint, request.method, str(response.status_code)).inc()
        started = getattr(g, "started", None)
        if started is not None:
            metrics.latency.labels(endpoint).observe(time.perf_counter() - started)
        return response

    def scrape() -> Response:
        lines = [generate_latest(_counted(metrics.registry)).decode()]
        lines.extend(_shared_figures(runtime().store, service().outbox_counts()))
        return Response("".join(lines), mimetype=CONTENT_TYPE_LATEST)

    app.add_url_rule("/metrics", "metrics", scrape)


def _counted(registry: CollectorRegistry) -> CollectorRegistry:
    """This process's registry, or under gunicorn every worker's files added up."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return registry
    combined = CollectorRegistry()
    MultiProcessCollector(combined)  # type: ignore[no-untyped-call]
    return combined


def _shared_figures(store: Store, outbox: dict[str, int]) -> Iterator[str]:
    """The figures every process shares, read from the database, in exposition format."""
    yield "# HELP medcare_writeback_outbox write-backs by state\n"
    yield "# TYPE medcare_writeback_outbox gauge\n"
    for state, count in sorted(outbox.items()):
        yield f'medcare_writeback_outbox{{state="{state}"}} {count}\n'
    yield "# HELP medcare_rescreen_queue_depth patients waiting for a re-screen, by state\n"
    yield "# TYPE medcare_rescreen_queue_depth gauge\n"
    for state in ("pending", "claimed"):
        yield f'medcare_rescreen_queue_depth{{state="{state}"}} {store.depth(state)}\n'
    age = store.oldest_pending_age()
    yield "# HELP medcare_rescreen_oldest_pending_seconds age of the oldest change no screen covers yet\n"
    yield "# TYPE medcare_rescreen_oldest_pending_seconds gauge\n"
    yield f"medcare_rescreen_oldest_pending_seconds {age.total_seconds() if age else 0.0}\n"
    yield "# HELP medcare_sweep_last_timestamp_seconds when each resource type was last swept\n"
    yield "# TYPE medcare_sweep_last_timestamp_seconds gauge\n"
    for resource_type, at in sorted(last_sweeps(store).items()):
        yield f'medcare_sweep_last_timestamp_seconds{{resource_type="{resource_type}"}} {at.timestamp()}\n'
    yield "# HELP medcare_results_changed_total results whose decision changed, by trigger\n"
    yield "# TYPE medcare_results_changed_total counter\n"
    for trigger, count in _changed_by_trigger(store):
        yield f'medcare_results_changed_total{{trigger="{trigger}"}} {count}\n'


def last_sweeps(store: Store) -> dict[str, datetime]:
    """When each resource type was last swept (service clock); types never swept are absent."""
    return {mark.resource_type: mark.swept_at for mark in store.watermarks() if mark.swept_at}


def _changed_by_trigger(store: Store) -> list[tuple[str, int]]:
    """Feed entries per trigger: counted from the changes feed, so it never goes back."""
    query = (
        select(StoredResult.trigger, func.count())
        .where(StoredResult.change_seq.is_not(None))
        .group_by(StoredResult.trigger)
        .order_by(StoredResult.trigger)
    )
    with store._read() as session:  # a count the store's concerns do not offer (yet)
        return [(trigger or "unknown", int(n)) for trigger, n in session.execute(query)]
