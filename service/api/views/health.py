"""Liveness and readiness (database and FHIR server reachable).

Readiness is public (load balancers call it without credentials), so it must not let anyone
make the service fetch the FHIR server's CapabilityStatement (690 KB on HAPI) at will. The FHIR
check is cached (`READY_TTL_S` when the server answered, `READY_FAILED_TTL_S` when it did not,
so a recovery is seen soon) and single-flight: however many callers arrive, at most one check
runs at a time and the others wait for its answer instead of starting their own. The database
ping is cheap and asked every time.

Readiness also reports the incremental sweeps (issue 14): a resource type whose last sweep is
older than MEDCARE_SWEEP_MAX_AGE_S (default three sweep intervals) makes the service not ready,
and `stale_sweeps` names it, because results silently going stale is the failure an
integration engine cannot see from the feed. Types never swept yet (a fresh start) do not count.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from flask import current_app
from flask_smorest import Blueprint

from service.api.deps import runtime, service, settings
from service.api.metrics import last_sweeps
from service.api.schemas import HealthSchema

blp = Blueprint("health", __name__, url_prefix="/health", description="Liveness and readiness")

READY_TTL_S = 60.0
READY_FAILED_TTL_S = 10.0


class CachedCheck:
    """A boolean check asked at most once per TTL, one caller at a time, with no lock held
    while it runs."""

    def __init__(
        self,
        check: Callable[[], bool],
        *,
        ttl_s: float = READY_TTL_S,
        failed_ttl_s: float = READY_FAILED_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._check = check
        self._ttl_s, self._failed_ttl_s, self._clock = ttl_s, failed_ttl_s, clock
        self._state = threading.Condition()
        self._value: bool | None = None
        self._expires = 0.0
        self._running = False
        self.waiting = 0  # callers waiting for the check in flight

    def __call__(self) -> bool:
        with self._state:
            while True:
                if self._value is not None and self._clock() < self._expires:
                    return self._value
                if not self._running:
                    self._running = True
                    break
                self.waiting += 1
                self._state.wait()  # releases the lock while another caller checks
                self.waiting -= 1
        value = False
        try:
            value = self._check()
        finally:
            with self._state:
                ttl = self._ttl_s if value else self._failed_ttl_s
                self._value, self._expires = value, self._clock() + ttl
                self._running = False
                self._state.notify_all()
        return value


def _fhir_check() -> CachedCheck | None:
    """This app's cached FHIR check (None without a FHIR server), made on first use."""
    use_cases = service()
    if not use_cases.has_fhir_server:
        return None
    check: CachedCheck | None = current_app.extensions.get("medcare_fhir_ready")
    if check is None:
        cached = CachedCheck(
            use_cases.fhir_server_answers, ttl_s=READY_TTL_S, failed_ttl_s=READY_FAILED_TTL_S
        )
        check = current_app.extensions.setdefault("medcare_fhir_ready", cached)
    return check


@blp.route("/live", methods=["GET"])
@blp.response(200, HealthSchema)
@blp.doc(security=[])
def live() -> dict[str, Any]:
    """The process answers."""
    return {"status": "ok", "checks": {}}


@blp.route("/ready", methods=["GET"])
@blp.response(200, HealthSchema)
@blp.alt_response(503, schema=HealthSchema, description="a dependency is not reachable")
@blp.doc(security=[])
def ready() -> Any:
    """The database answers (schema current) and, when configured, the FHIR server answers
    (checked at most once a minute, every 10 s while it does not)."""
    checks = {"database": service().database_answers()}
    fhir = _fhir_check()
    if fhir is not None:
        checks["fhir_server"] = fhir()
    answer: dict[str, Any] = {"checks": checks}
    stale = _stale_sweeps() if checks["database"] else []
    if stale:
        checks["sweeps"] = False
        answer["stale_sweeps"] = stale
    ok = all(checks.values())
    return {"status": "ok" if ok else "unavailable", **answer}, 200 if ok else 503


def sweep_max_age() -> timedelta | None:
    """How old a type's last sweep may be (None: sweeps are off)."""
    screening = settings().screening
    max_age: int | None = getattr(screening, "sweep_max_age_s", None)
    interval: int = getattr(screening, "sweep_interval_s", 0)
    if max_age is None:
        max_age = 3 * interval if interval else None
    return timedelta(seconds=max_age) if max_age else None


def _stale_sweeps() -> list[str]:
    """The resource types whose last sweep is older than the allowed age, sorted."""
    max_age = sweep_max_age()
    if max_age is None:
        return []
    service_runtime = runtime()
    now = service_runtime.clock.now()
    swept = last_sweeps(service_runtime.store)
    return sorted(kind for kind, at in swept.items() if now - at > max_age)
