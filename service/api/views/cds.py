"""CDS Hooks 2.0: discovery, a `patient-view` service that returns one MEDCARE card, and the
feedback endpoint the EHR reports the card's outcome to.

The EHR's JWT is verified (issuer allow-list, its JWKS, expiry, audience). With a complete
prefetch the service makes no FHIR call at all; without one (or with a Bundle cut into pages),
it reads the patient from the service's own configured source. The `fhirServer` a request names
is never used: the FHIR base URL does not come from a request. An unknown patient, or one with no
prostate cancer diagnosis (MEDCARE_CDS_REQUIRE_DIAGNOSIS), gets no card: CDS Hooks answers "no
guidance" with an empty `cards` list, and a card on every chart teaches clinicians to ignore it.
"""

from __future__ import annotations

from typing import Any

from flask import current_app, g, request
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate

from service.api.bodies import check_json_body
from service.api.cds_cards import OVERRIDE_REASONS, card, has_prostate_cancer, markdown_text
from service.api.cds_feedback import FeedbackRequestSchema, record_feedback
from service.api.cds_prefetch import record_from_prefetch
from service.api.deps import runtime, service, settings
from service.api.errors import ErrorSchema
from service.api.schemas import FHIR_ID
from service.api.security import (
    JwtVerifier,
    ReplayCache,
    TokenRules,
    Unauthorized,
    issuers_verifier,
)
from service.errors import NotFound
from service.read_plan import cds_prefetch_templates, read_plan

blp = Blueprint("cds", __name__, url_prefix="/cds-services", description="CDS Hooks")
SERVICE_ID = "medcare-patient-view"
__all__ = ["OVERRIDE_REASONS", "blp", "card", "markdown_text", "prefetch_templates"]


def prefetch_templates() -> dict[str, str]:
    """Prefetch that gives the service everything it reads, so a prefetching EHR costs no calls:
    the read plan's (service/read_plan.py), the same plan the server source searches by."""
    return cds_prefetch_templates(read_plan(runtime().mappings))


class CdsContextSchema(Schema):
    """The `patient-view` context of CDS Hooks 2.0: `encounterId` (and any field a later
    version adds) is accepted, as EHRs send it; only `patientId` is read."""

    class Meta:
        unknown = "include"

    patientId = fields.String(required=True, validate=FHIR_ID)
    userId = fields.String()
    encounterId = fields.String()


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


class CodingSchema(Schema):
    system = fields.String()
    code = fields.String(required=True)
    display = fields.String()


class LinkSchema(Schema):
    label = fields.String(required=True)
    url = fields.String(required=True)
    type = fields.String(required=True, validate=validate.OneOf(["absolute", "smart"]))


class CardSchema(Schema):
    uuid = fields.String()
    summary = fields.String(required=True, validate=validate.Length(max=140))
    detail = fields.String()
    indicator = fields.String(
        required=True, validate=validate.OneOf(["info", "warning", "critical"])
    )
    source = fields.Nested(CardSourceSchema, required=True)
    links = fields.List(fields.Nested(LinkSchema))
    overrideReasons = fields.List(fields.Nested(CodingSchema))


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
    """One card: candidate or ineligible, why, and what needs review; none for a patient the
    source does not know or (by default) one with no prostate cancer diagnosis."""
    patient_id = body["context"]["patientId"]
    expected = list(prefetch_templates())
    record = record_from_prefetch(patient_id, body.get("prefetch") or {}, expected)
    # without a usable prefetch: read from the service's source (502 the server failed)
    try:
        result = service().screen_record(patient_id, record)  # as of the service's date
    except NotFound:
        return {"cards": []}
    config = settings()
    if config.cds_require_diagnosis and not has_prostate_cancer(result):
        return {"cards": []}
    answer = card(result, web_base_url=config.web_base_url)
    # kept so that the EHR's feedback, which names only the uuid, reaches the patient
    runtime().store.issue_card(answer["uuid"], patient_id, result.study, result.status.value)
    return {"cards": [answer]}


@blp.route(f"/{SERVICE_ID}/feedback", methods=["POST"])
@blp.arguments(FeedbackRequestSchema)
@blp.response(200, Schema)
@blp.alt_response(401, schema=ErrorSchema)
def feedback(body: dict[str, Any]) -> dict[str, Any]:
    """CDS Hooks 2.0 feedback: per card uuid, accepted or overridden (with a reason)."""
    author = str(g.get("cds_claims", {}).get("sub") or "unknown")
    record_feedback(runtime().store, body["feedback"], author=author)
    return {}


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
    """The hook call's token names the service's URL as its audience, a feedback call's the
    feedback URL (CDS Hooks 2.0: `aud` is the endpoint called); each has its own verifier."""
    config = settings()
    feedback = request.path.endswith("/feedback")
    key = "medcare_cds_feedback_verifier" if feedback else "medcare_cds_verifier"
    verifier: JwtVerifier | None = current_app.extensions.get(key)
    if verifier is None and config.cds_issuers:
        # the audience is a setting (Settings.check requires it with issuers), never the
        # request's own URL: a forged Host header must not choose which tokens pass
        audience = config.cds_audience
        if feedback and audience:
            audience = audience.rstrip("/") + "/feedback"
        verifier = issuers_verifier(
            config.cds_issuers,
            audience,
            verify=config.tls_ca_bundle or True,
            rules=TokenRules(config.cds_max_token_lifetime_s, ReplayCache()),
            name="CDS Hooks JWT",
        )
        if verifier.audience is None:  # settings built without check(): refuse, never guess
            raise Unauthorized("the CDS Hooks audience is not configured")
        current_app.extensions[key] = verifier
    authorization = request.headers.get("Authorization", "")
    if verifier is None:
        if config.allow_no_auth:
            return
        raise Unauthorized("CDS Hooks callers are not configured (MEDCARE_CDS_ISSUERS)")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("a CDS Hooks JWT is required")
    g.cds_claims = verifier.verify(token.strip())
