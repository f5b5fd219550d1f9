"""What a FHIR server's Subscription notification says changed, once its secret is checked.

Pure: the HTTP endpoint hands over method, path, headers and body and answers with the status
given back here; it decides nothing about FHIR. The shapes that arrive (see peers/hapi/README):

- HAPI R4 rest-hook with `payload: application/fhir+json`: `PUT <endpoint>/<Type>/<id>` with
  the resource (`DELETE <endpoint>/<Type>/<id>` for a delete, when asked for);
- Medplum and others: `POST <endpoint>` with the bare resource;
- R4B/R5 and the R4 backport: a Bundle (`history` or `subscription-notification`) whose entries
  carry resources, or only their `fullUrl` (id-only);
- HAPI R4 rest-hook without payload: an empty `POST <endpoint>`. It names no resource at all,
  so the caller must sweep; the Subscriptions made by subscriptions.py send id-only
  notifications to `<endpoint>/<Type>`, which at least names the type to sweep.

Why the secret first and in constant time: the endpoint is reachable by whoever can reach the
service, and a comparison that stops at the first differing byte tells an attacker how much of
a guess was right. The body is read only after that, within a size and a depth limit, because
it comes from outside (limits.parse_json).
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

from service.currency.subscriptions import HookSettings
from service.fhir.limits import MAX_JSON_DEPTH, parse_json
from service.fhir.record import FHIR_ID

# One notification is one resource or one small Bundle; a page of a patient's record is < 5 MB.
MAX_NOTIFICATION_BYTES: Final = 5 * 1024 * 1024
_TYPE = re.compile(r"[A-Z][A-Za-z]{1,63}")
# Patient/x, an absolute .../Patient/x, either with /_history/n
_PATIENT_REF = re.compile(r"(?:^|/)Patient/([A-Za-z0-9\-.]{1,64})(?:/_history/[^/]+)?$")
# Entries that describe the notification itself, not a change (R4B/R5, and the R4 backport)
_STATUS_TYPES: Final = frozenset({"SubscriptionStatus", "Parameters"})
_BUNDLE_TYPES: Final = frozenset({"history", "subscription-notification"})
# Where a clinical resource names its patient (Patient itself is the patient)
_PATIENT_FIELDS: Final = ("subject", "patient")


@dataclass(frozen=True)
class NotificationRequest:
    """One request to the notification endpoint; `path` is what follows the endpoint's own
    path ('' , 'Observation', 'Observation/123'), `headers` as received (any case)."""

    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes


@dataclass(frozen=True)
class Change:
    """A resource the server says changed; `patient_id` None when the notification did not say
    (id-only, a delete): then the caller reads the resource, or sweeps its type."""

    resource_type: str
    resource_id: str
    patient_id: str | None
    deleted: bool = False


@dataclass(frozen=True)
class Notification:
    """What to answer (`status`) and what to do: re-screen the patients of `changes`, sweep
    `sweep_types` (or every type when `sweep_all`). `reason` says why a request was refused,
    for the log and the answer; it never holds a header value."""

    status: int
    changes: tuple[Change, ...] = ()
    sweep_types: tuple[str, ...] = ()
    sweep_all: bool = False
    reason: str = ""

    @property
    def accepted(self) -> bool:
        return self.status < 300

    @property
    def patients(self) -> tuple[str, ...]:
        """The distinct patients named, in order of first mention."""
        return tuple(dict.fromkeys(c.patient_id for c in self.changes if c.patient_id))


def refused(status: int, reason: str) -> Notification:
    return Notification(status, reason=reason)


def authorised(headers: Mapping[str, str], hook: HookSettings) -> Notification | None:
    """None when the request carries the shared secret; otherwise the refusal (401 without the
    header, 403 with a wrong value). hmac.compare_digest takes the same time wherever the
    value differs."""
    wanted = hook.header_name.lower()
    given = next((value for name, value in headers.items() if name.lower() == wanted), None)
    if given is None:
        return refused(401, f"no {hook.header_name} header")
    if not hmac.compare_digest(given.strip().encode(), hook.header_value().encode()):
        return refused(403, f"wrong {hook.header_name} header")
    return None


def parse_notification(
    request: NotificationRequest,
    hook: HookSettings,
    *,
    max_bytes: int = MAX_NOTIFICATION_BYTES,
    max_depth: int = MAX_JSON_DEPTH,
) -> Notification:
    """Check the secret, then read what changed; never raises for what a client sends."""
    refusal = authorised(request.headers, hook)
    if refusal is not None:
        return refusal
    if len(request.body) > max_bytes:
        return refused(413, f"notification larger than {max_bytes} bytes")
    target = _path_target(request.path)
    if target is None:
        return refused(404, "not a notification path")
    path_type, path_id = target
    method = request.method.upper()
    if method == "DELETE":
        if path_type is None or path_id is None:
            return refused(400, "DELETE names no resource")
        return Notification(200, (Change(path_type, path_id, None, deleted=True),))
    if method not in ("POST", "PUT"):
        return refused(405, f"{method} is not a notification")
    if not request.body.strip():
        return _id_only(path_type, path_id)
    try:
        content = parse_json(request.body, max_depth)
    except (ValueError, UnicodeDecodeError):  # TooDeep is a ValueError, as is bad JSON
        return refused(400, "the body is not JSON within the depth limit")
    if not isinstance(content, dict) or not isinstance(content.get("resourceType"), str):
        return refused(400, "the body is not a FHIR resource")
    if content["resourceType"] == "Bundle":
        if content.get("type") not in _BUNDLE_TYPES:
            return refused(400, "a Bundle that is not a history or subscription-notification")
        changes = tuple(_bundle_changes(content))
    else:
        change = _resource_change(content, path_id)
        if change is None:
            return refused(400, "the resource has no usable type and id")
        changes = (change,)
    return Notification(200, changes)


def _id_only(path_type: str | None, path_id: str | None) -> Notification:
    """An empty notification: the path is all it says (HAPI R4 without payload)."""
    if path_type is not None and path_id is not None:
        return Notification(200, (Change(path_type, path_id, None),))
    if path_type is not None:
        return Notification(200, sweep_types=(path_type,))
    return Notification(200, sweep_all=True)


def _path_target(path: str) -> tuple[str | None, str | None] | None:
    """('Observation', '123') from 'Observation/123', ('Observation', None) from 'Observation',
    (None, None) from ''; None for anything else."""
    parts = [part for part in path.strip("/").split("/") if part]
    if len(parts) > 2 or (parts and not _TYPE.fullmatch(parts[0])):
        return None
    if len(parts) == 2 and not FHIR_ID.fullmatch(parts[1]):
        return None
    return (parts[0] if parts else None, parts[1] if len(parts) == 2 else None)


def _bundle_changes(bundle: dict[str, Any]) -> Iterator[Change]:
    for entry in bundle.get("entry") or []:
        if not isinstance(entry, dict):
            continue
        resource = entry.get("resource")
        request = entry.get("request")
        if not isinstance(request, dict):
            request = {}
        deleted = str(request.get("method", "")).upper() == "DELETE"
        if isinstance(resource, dict) and resource.get("resourceType") in _STATUS_TYPES:
            continue
        if isinstance(resource, dict) and not deleted:
            change = _resource_change(resource, None)
        else:
            change = _reference_change(entry.get("fullUrl") or request.get("url"), deleted)
        if change is not None:
            yield change


def _resource_change(resource: dict[str, Any], path_id: str | None) -> Change | None:
    resource_type = resource.get("resourceType")
    resource_id = resource.get("id") or path_id
    if not isinstance(resource_type, str) or not _TYPE.fullmatch(resource_type):
        return None
    if not isinstance(resource_id, str) or not FHIR_ID.fullmatch(resource_id):
        return None
    if resource_type == "Patient":
        return Change(resource_type, resource_id, resource_id)
    return Change(resource_type, resource_id, _patient_of(resource))


def _reference_change(url: Any, deleted: bool) -> Change | None:
    """A change named only by URL ('.../Observation/123', with or without /_history/n)."""
    if not isinstance(url, str):
        return None
    parts = url.split("?")[0].rstrip("/").split("/")
    if len(parts) >= 4 and parts[-2] == "_history":
        parts = parts[:-2]
    if len(parts) < 2 or not _TYPE.fullmatch(parts[-2]) or not FHIR_ID.fullmatch(parts[-1]):
        return None
    patient = parts[-1] if parts[-2] == "Patient" else None
    return Change(parts[-2], parts[-1], patient, deleted=deleted)


def _patient_of(resource: dict[str, Any]) -> str | None:
    for name in _PATIENT_FIELDS:
        field = resource.get(name)
        reference = field.get("reference") if isinstance(field, dict) else None
        if isinstance(reference, str):
            found = _PATIENT_REF.search(reference)
            if found:
                return found.group(1)
    return None
