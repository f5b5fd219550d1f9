"""POST /v1/notifications: a FHIR server's Subscription says data changed; re-screen soon.

Why outside bearer authentication: the FHIR server is not an API client and holds no API
token; it proves itself with the shared secret the service put in `Subscription.channel.header`
(MEDCARE_NOTIFY_SECRET), checked in constant time by service/currency/notifications.py before
the body is read. A refusal answers a bare 401: no detail, so a caller guessing the secret
learns nothing (not even whether the header was missing or wrong); it is counted and logged by
reason. The endpoint only enqueues: the screen happens in a re-screen worker (service/work/),
so a burst of notifications for one patient becomes one screen and never slows the FHIR server's
delivery thread.

The paths are those HAPI's R4 rest-hook uses: `POST /v1/notifications` (a Bundle, a bare
resource, or empty), `PUT /v1/notifications/<Type>/<id>` with the resource, and the id-only
`POST /v1/notifications/<Type>` the service's own id-only Subscriptions ask for. A notification
that names no patient (id-only, a delete) has its resource type swept soon (`SweepSoon`: one
sweep a moment later for a whole burst, on a thread of this process), or by the next scheduled
sweep when this process has no sweeper (no FHIR server, sweeps off).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from datetime import timedelta
from typing import Any, Protocol

from flask import Response, current_app, jsonify, request
from flask_smorest import Blueprint

from service.api.deps import runtime, settings
from service.api.errors import ErrorSchema, error_response
from service.api.metrics import count_notification
from service.api.schemas import NotificationAnswerSchema
from service.currency.notifications import Notification, NotificationRequest, parse_notification
from service.currency.subscriptions import HookSettings
from service.settings import Settings

log = logging.getLogger("medcare_screen.notifications")

blp = Blueprint(
    "notifications", __name__, url_prefix="/v1",
    description="FHIR Subscription notifications (authenticated by the Subscription's secret)",
)  # fmt: skip

TRIGGER = "subscription"
# the endpoint names a FHIR server may call (app.py lets them past bearer authentication)
ENDPOINTS = ("notifications.notify", "notifications.notify_typed", "notifications.notify_resource")
_REFUSED = (401, 403)  # no or a wrong secret: both answer 401, with nothing said
SWEEP_SOON_S = 1.0  # id-only notifications within this long of the first are one sweep
ALL_TYPES = "*"


class TypeSweeper(Protocol):
    """What SweepSoon needs of service/currency/sweeps.Sweeper."""

    def sweep(self, types: Iterable[str] | None = None) -> Any: ...


class SweepSoon:
    """Sweeps the types id-only notifications named, a moment after the first, on one thread:
    a burst of notifications becomes one sweep, and the FHIR server's delivery never waits
    for it. Errors are logged by type (the scheduled sweep is the safety net)."""

    def __init__(self, sweeper: TypeSweeper, delay_s: float = SWEEP_SOON_S) -> None:
        self._sweeper, self._delay_s = sweeper, delay_s
        self._lock = threading.Lock()
        self._types: set[str] = set()
        self._thread: threading.Thread | None = None

    def ask(self, types: Iterable[str]) -> None:
        """Sweep `types` (ALL_TYPES: every type) soon."""
        with self._lock:
            self._types.update(types)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="sweep-soon", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        threading.Event().wait(self._delay_s)
        with self._lock:
            types, self._types, self._thread = self._types, set(), None
        try:
            self._sweeper.sweep(None if ALL_TYPES in types else sorted(types))
        except Exception as exc:  # the next scheduled sweep covers what this one missed
            log.warning("sweep after a notification failed (%s)", type(exc).__name__)


def _sweep_soon() -> SweepSoon | None:
    """This app's SweepSoon, made on first use; None when the process has no sweeper."""
    sweeper = runtime().scheduler.schedules.sweeper
    if sweeper is None:
        return None
    soon: SweepSoon = current_app.extensions.setdefault("medcare_sweep_soon", SweepSoon(sweeper))
    return soon


def hook_settings(config: Settings) -> HookSettings | None:
    """The Subscriptions' delivery settings, or None when no secret is configured (then every
    notification is refused: an endpoint without a secret would let anyone queue work)."""
    secret = config.api.notify_secret
    if secret is None or not secret.get_secret_value():
        return None
    return HookSettings(
        endpoint=config.api.notify_url or "http://127.0.0.1/v1/notifications",
        secret=secret.get_secret_value(),
        payload=config.api.notify_payload,
    )


def _receive(path: str) -> Response:
    hook = hook_settings(settings())
    if hook is None:
        count_notification("refused", "not-configured")
        log.warning("notification refused: MEDCARE_NOTIFY_SECRET is not set")
        return Response(status=401)
    notification = parse_notification(
        NotificationRequest(request.method, path, dict(request.headers), request.get_data()),
        hook,
    )
    if notification.status in _REFUSED:
        count_notification("refused", "secret")
        log.warning("notification refused (%s) from %s", notification.reason, request.remote_addr)
        return Response(status=401)
    if not notification.accepted:
        count_notification("refused", str(notification.status))
        return error_response(notification.status, "bad-notification", notification.reason)
    count_notification("accepted", "")
    return _answer(_enqueue(notification))


def _enqueue(notification: Notification) -> dict[str, Any]:
    """Queue the population's patients named; say which types are left to a sweep."""
    service = runtime()
    store = service.store
    kept = sorted(store.in_population_of(notification.patients)) if notification.patients else []
    if kept:
        delay = timedelta(seconds=settings().screening.rescreen_delay_s)
        store.enqueue(kept, TRIGGER, service.source.label, delay=delay)
    unnamed = sorted(
        {c.resource_type for c in notification.changes if c.patient_id is None}
        | set(notification.sweep_types)
    )
    sweep = [ALL_TYPES] if notification.sweep_all else unnamed
    soon = _sweep_soon() if sweep else None
    if soon is not None:
        soon.ask(sweep)
    log.info(
        "notification: %d change(s), %d patient(s) queued, sweep %s",
        len(notification.changes), len(kept),
        "all types" if notification.sweep_all else (",".join(unnamed) or "none"),
    )  # fmt: skip
    return {
        "changes": len(notification.changes),
        "queued": len(kept),
        "sweep": sweep,
    }


def _answer(body: dict[str, Any]) -> Response:
    answer = NotificationAnswerSchema().dump(body)
    if "fhir" in request.headers.get("Accept", ""):
        # HAPI's rest-hook is a FHIR client: it parses the answer as a resource and, failing,
        # retries the delivery for minutes, holding up every later one (bench/currency.py)
        outcome = {"resourceType": "OperationOutcome", "issue": [{"severity": "information",
                   "code": "informational", "diagnostics": f"{answer}"}]}  # fmt: skip
        response = jsonify(outcome)
        response.mimetype = "application/fhir+json"
    else:
        response = jsonify(answer)
    response.status_code = 202
    return response


_DOC: dict[str, Any] = {
    "security": [],
    "responses": {
        "202": {
            "description": "accepted: the population's patients named are queued for a re-screen",
            "content": {"application/json": {"schema": NotificationAnswerSchema}},
        },
        "401": {
            "description": "no or a wrong shared secret (nothing more is said)",
        },
        "400": {
            "description": "not a FHIR resource or notification Bundle",
            "content": {"application/json": {"schema": ErrorSchema}},
        },
    },
}


@blp.route("/notifications", methods=["POST"])
@blp.doc(**_DOC)
def notify() -> Response:
    """A notification Bundle, a bare resource, or an empty (id-only) notification."""
    return _receive("")


@blp.route("/notifications/<resource_type>", methods=["POST"])
@blp.doc(**_DOC)
def notify_typed(resource_type: str) -> Response:
    """An id-only notification naming its resource type (swept soon)."""
    return _receive(resource_type)


@blp.route("/notifications/<resource_type>/<resource_id>", methods=["PUT", "DELETE"])
@blp.doc(**_DOC)
def notify_resource(resource_type: str, resource_id: str) -> Response:
    """HAPI's rest-hook with payload: the changed resource PUT (or DELETEd) by type and id."""
    return _receive(f"{resource_type}/{resource_id}")
