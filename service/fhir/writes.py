"""Writing to a FHIR server: create, update (plain, conditional, If-Match) and transaction.

What matters here is what may be sent twice. A retry after a timeout is safe only for a write
whose repetition leaves the server as one attempt would (RFC 9110 §9.2.2): a PUT, a conditional
create, a transaction of such entries. A plain create is retried only when the server cannot
have processed it (retry.py), so a dropped connection never makes a second resource.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import quote

from service.fhir.http_parse import Resource, WriteResult, as_object, parse_resource
from service.fhir.transport import Transport

# Methods whose repetition leaves the server as one attempt would (RFC 9110 §9.2.2).
IDEMPOTENT_METHODS: Final = frozenset({"GET", "HEAD", "PUT", "DELETE"})


def transaction(http: Transport, bundle: Resource, patient: str | None) -> Resource:
    """POST a transaction Bundle (FhirClient.transaction says when it is retried)."""
    entries = [entry for entry in bundle.get("entry") or [] if isinstance(entry, dict)]
    idempotent = all(_idempotent_entry(entry) for entry in entries)
    request = f"POST transaction of {len(entries)} entries"
    response = http.send_json("POST", "", bundle, request, patient, idempotent=idempotent)
    return http.expect(response, request, patient, "Bundle")


def create(
    http: Transport, resource: Resource, if_none_exist: str | None, patient: str | None
) -> WriteResult:
    """POST a resource; with `if_none_exist` (a search query) a match is returned instead."""
    resource_type = _type_of(resource)
    headers = {"If-None-Exist": if_none_exist} if if_none_exist else {}
    request = f"POST {resource_type}" + (
        f" (If-None-Exist: {if_none_exist})" if if_none_exist else ""
    )
    idempotent = bool(if_none_exist)
    return _write(http, "POST", resource_type, resource, request, patient, idempotent, headers)


def update(
    http: Transport,
    resource: Resource,
    conditional: str | None,
    if_match: str | None,
    patient: str | None,
) -> WriteResult:
    """PUT a resource by id or by a search query (FhirClient.update says what If-Match does)."""
    resource_type = _type_of(resource)
    if conditional:
        path = f"{resource_type}?{conditional}"
    elif isinstance(resource.get("id"), str):
        path = f"{resource_type}/{quote(resource['id'], safe='')}"
    else:
        raise ValueError("update() needs a resource with an id, or a conditional query")
    headers = {"If-Match": if_match} if if_match else {}
    return _write(http, "PUT", path, resource, f"PUT {path}", patient, True, headers)


def _write(
    http: Transport,
    method: str,
    path: str,
    resource: Resource,
    request: str,
    patient: str | None,
    idempotent: bool,
    headers: Mapping[str, str],
) -> WriteResult:
    """Send one resource, asking for it back, and read what the server answered."""
    response = http.send_json(
        method,
        path,
        resource,
        request,
        patient,
        idempotent=idempotent,
        headers={"Prefer": "return=representation", **headers},
    )
    body = parse_resource(response, request, patient)
    resource_type = resource["resourceType"]
    returned = body if body and body.get("resourceType") == resource_type else None
    return WriteResult(
        returned,
        response.status_code,
        response.headers.get("Location") or response.headers.get("Content-Location"),
        response.headers.get("ETag"),
    )


def _idempotent_entry(entry: dict[str, Any]) -> bool:
    request = as_object(entry.get("request"))
    method = str(request.get("method", "")).upper()
    return method in IDEMPOTENT_METHODS or (method == "POST" and bool(request.get("ifNoneExist")))


def _type_of(resource: Resource) -> str:
    resource_type = resource.get("resourceType")
    if not isinstance(resource_type, str) or not resource_type:
        raise ValueError("the resource has no resourceType")
    return resource_type
