"""CDS Hooks: discovery and a `patient-view` service that returns one MEDCARE card.

The EHR's JWT is verified (issuer allow-list, its JWKS, expiry, audience). With prefetch the
service makes no FHIR call at all; without it, it reads the patient from the service's own
configured source. The `fhirServer` a request names is never used: the FHIR base URL does not
come from a request.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from flask import current_app, request
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate

from service.api.bodies import check_json_body
from service.api.deps import runtime, service, settings
from service.api.errors import ApiError, ErrorSchema
from service.api.schemas import FHIR_ID
from service.api.security import (
    JwtVerifier,
    ReplayCache,
    TokenRules,
    Unauthorized,
    issuers_verifier,
)
from service.fhir.record import PatientRecord
from service.read_plan import cds_prefetch_templates, read_plan
from service.screening.result import Result, ScreenResult, Status

blp = Blueprint("cds", __name__, url_prefix="/cds-services", description="CDS Hooks")
SERVICE_ID = "medcare-patient-view"


def prefetch_templates() -> dict[str, str]:
    """Prefetch that gives the service everything it reads, so a prefetching EHR costs no calls:
    the read plan's (service/read_plan.py), the same plan the server source searches by."""
    return cds_prefetch_templates(read_plan(runtime().mappings))


class CdsContextSchema(Schema):
    patientId = fields.String(required=True, validate=FHIR_ID)
    userId = fields.String()


class CdsRequestSchema(Schema):
    class Meta:
        unknown = "include"  # fhirServer, fhirAuthorization...: accepted, never used

    hook = fields.String(required=True, validate=validate.Equal("patient-view"))
    hookInstance = fields.String(required=True)
    context = fields.Nested(CdsContextSchema, required=True)
    prefetch = fields.Dict(keys=fields.String(), values=fields.Raw(allow_none=True))


class CdsServiceSchema(Schema):
    hook = fields.String(required=True)
    id = fields.String(required=True)
    title = fields.String()
    description = fields.String(required=True)
    prefetch = fields.Dict(keys=fields.String(), values=fields.String())


class DiscoverySchema(Schema):
    services = fields.List(fields.Nested(CdsServiceSchema), required=True)


class CardSourceSchema(Schema):
    label = fields.String(required=True)


class CardSchema(Schema):
    uuid = fields.String()
    summary = fields.String(required=True, validate=validate.Length(max=140))
    detail = fields.String()
    indicator = fields.String(
        required=True, validate=validate.OneOf(["info", "warning", "critical"])
    )
    source = fields.Nested(CardSourceSchema, required=True)


class CardsSchema(Schema):
    cards = fields.List(fields.Nested(CardSchema), required=True)


@blp.route("", methods=["GET"])
@blp.response(200, DiscoverySchema)
@blp.doc(security=[])
def discovery() -> dict[str, Any]:
    """CDS Hooks discovery: the services and their prefetch templates."""
    return {
        "services": [
            {
                "hook": "patient-view",
                "id": SERVICE_ID,
                "title": "MEDCARE trial pre-screen",
                "description": "Is this patient a candidate for the MEDCARE trial (NCT06585007), and why?",
                "prefetch": prefetch_templates(),
            }
        ]
    }


@blp.route(f"/{SERVICE_ID}", methods=["POST"])
@blp.arguments(CdsRequestSchema)
@blp.response(200, CardsSchema)
@blp.alt_response(401, schema=ErrorSchema)
def patient_view(body: dict[str, Any]) -> dict[str, Any]:
    """One card: candidate or ineligible, why, and what needs review."""
    patient_id = body["context"]["patientId"]
    record = _record_from_prefetch(patient_id, body.get("prefetch") or {})
    # without a prefetch: read from the service's source (404 unknown, 502 the server failed)
    result = service().screen_record(patient_id, record)  # as of the service's date
    return {"cards": [card(result)]}


def card(result: ScreenResult) -> dict[str, Any]:
    ruled_out = [c for c in result.criteria if c.rules_out()]
    review = [
        c for c in result.criteria if c.result is Result.UNKNOWN and c.kind.value != "informational"
    ]
    if result.status is Status.INELIGIBLE:
        summary = f"MEDCARE trial: not eligible ({', '.join(c.id for c in ruled_out)})"
        indicator = "info"
    else:
        summary = "MEDCARE trial: candidate for the tumour board" + (
            f", {len(review)} item(s) to check" if review else ""
        )
        indicator = "warning"
    lines = [
        f"**Status:** {result.status.value}"
        + (f", patient type {result.patient_type}" if result.patient_type else "")
    ]
    if ruled_out:
        lines.append("**Ruled out by:**")
        lines.extend(f"- {c.id}: {markdown_text(c.reason)}" for c in ruled_out)
    if review:
        lines.append("**Needs review:**")
        lines.extend(f"- {c.id}: {markdown_text(c.reason)}" for c in review)
    manual = [c.id for c in result.criteria if c.result is Result.MANUAL]
    lines.append(f"**Always checked by a person:** {', '.join(manual)}")
    if result.notes:
        lines.append("**Data problems:**")
        lines.extend(f"- {markdown_text(note)}" for note in result.notes)
    return {
        "uuid": str(uuid.uuid4()),
        "summary": summary[:140],
        "detail": "\n".join(lines),
        "indicator": indicator,
        "source": {"label": "MEDCARE Screen (pre-screen, rules " + result.rules_version + ")"},
    }


_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+!|~])")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")


def markdown_text(text: str) -> str:
    """Text for a card's Markdown that renders as itself: reasons quote resource ids and codes
    that came from a FHIR server or a prefetch, so no HTML (`<script>`), link, image or line
    break they contain may take effect in the EHR."""
    text = _CONTROL.sub(" ", text)
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text)


def _record_from_prefetch(patient_id: str, prefetch: dict[str, Any]) -> PatientRecord | None:
    """A record from prefetched data, or None when any template was not prefetched."""
    expected = prefetch_templates().keys()
    if not prefetch or any(prefetch.get(key) is None for key in expected):
        return None
    record = PatientRecord(patient_id)
    patient = prefetch["patient"]
    if (
        not isinstance(patient, dict)
        or patient.get("resourceType") != "Patient"
        or patient.get("id") != patient_id
    ):
        raise ApiError(400, "bad-prefetch", "prefetch 'patient' is not this Patient")
    record.add(patient)
    for key in expected:
        if key == "patient":
            continue
        bundle = prefetch[key]
        if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
            raise ApiError(400, "bad-prefetch", f"prefetch {key!r} is not a Bundle")
        for entry in bundle.get("entry") or []:
            resource = entry.get("resource") if isinstance(entry, dict) else None
            if isinstance(resource, dict) and isinstance(resource.get("resourceType"), str):
                record.add(resource, entry.get("fullUrl"))
    return record


@blp.before_request
def _authenticate_ehr() -> None:
    """The EHR's JWT is checked before anything else, the request body included: a caller
    without one learns nothing, not even which fields the body lacks."""
    if request.method == "POST":
        _verify_ehr_jwt()


@blp.before_request
def _check_body() -> None:
    """After the JWT (registered after _authenticate_ehr): duplicate keys or deep nesting in a
    prefetch are a 400, never a 500 (service.api.bodies.check_json_body)."""
    if request.method == "POST":
        check_json_body()


def _verify_ehr_jwt() -> None:
    config = settings()
    verifier: JwtVerifier | None = current_app.extensions.get("medcare_cds_verifier")
    if verifier is None and config.cds_issuers:
        # the audience is a setting (Settings.check requires it with issuers), never the
        # request's own URL: a forged Host header must not choose which tokens pass
        verifier = issuers_verifier(
            config.cds_issuers,
            config.cds_audience,
            verify=config.tls_ca_bundle or True,
            rules=TokenRules(config.cds_max_token_lifetime_s, ReplayCache()),
            name="CDS Hooks JWT",
        )
        if verifier.audience is None:  # settings built without check(): refuse, never guess
            raise Unauthorized("the CDS Hooks audience is not configured")
        current_app.extensions["medcare_cds_verifier"] = verifier
    authorization = request.headers.get("Authorization", "")
    if verifier is None:
        if config.allow_no_auth:
            return
        raise Unauthorized("CDS Hooks callers are not configured (MEDCARE_CDS_ISSUERS)")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("a CDS Hooks JWT is required")
    verifier.verify(token.strip())
