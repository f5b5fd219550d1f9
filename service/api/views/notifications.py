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
that names no patient (id-only, a delete) leaves that resource type to the next sweep.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from flask import Response, jsonify, request
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
    log.info(
        "notification: %d change(s), %d patient(s) queued, sweep %s",
        len(notification.changes), len(kept),
        "all types" if notification.sweep_all else (",".join(unnamed) or "none"),
    )  # fmt: skip
    return {
        "changes": len(notification.changes),
        "queued": len(kept),
        "sweep": ["*"] if notification.sweep_all else unnamed,
    }


def _answer(body: dict[str, Any]) -> Response:
    response = jsonify(NotificationAnswerSchema().dump(body))
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
