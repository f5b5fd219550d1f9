"""Prometheus metrics: request counts and latencies by endpoint, and run/outbox gauges.

Labels are endpoint names and status codes only: never a patient id or any data.
"""

from __future__ import annotations

import time

from flask import Flask, Response, g, request
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from service.api.deps import service


def register_metrics(app: Flask) -> None:
    registry = CollectorRegistry()
    requests_total = Counter(
        "medcare_http_requests",
        "HTTP requests",
        ["endpoint", "method", "status"],
        registry=registry,
    )
    latency = Histogram(
        "medcare_http_request_seconds", "HTTP request latency", ["endpoint"], registry=registry
    )

    @app.before_request
    def _start_timer() -> None:
        g.started = time.perf_counter()

    @app.after_request
    def _observe(response: Response) -> Response:
        endpoint = request.endpoint or "unmatched"
        requests_total.labels(endpoint, request.method, str(response.status_code)).inc()
        started = getattr(g, "started", None)
        if started is not None:
            latency.labels(endpoint).observe(time.perf_counter() - started)
        return response

    def metrics() -> Response:
        outbox = service().outbox_counts()
        lines = [generate_latest(registry).decode()]
        for state, count in sorted(outbox.items()):
            lines.append(f'medcare_writeback_outbox{{state="{state}"}} {count}\n')
        return Response("".join(lines), mimetype=CONTENT_TYPE_LATEST)

    app.add_url_rule("/metrics", "metrics", metrics)
