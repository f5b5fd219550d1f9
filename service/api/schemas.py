"""Marshmallow schemas at the edge: what requests may carry and what responses contain.

flask-smorest uses them both to load/dump and to generate /openapi.json, so the document and
the behaviour cannot drift. Patient ids follow the FHIR id rule; searches must be Patient
searches (the FHIR base URL itself never comes from a request).
"""

from __future__ import annotations

from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

from service.screening.result import CRITERIA
from service.store.results import TRIGGERS

FHIR_ID = validate.Regexp(r"^[A-Za-z0-9\-.]{1,64}\Z", error="not a FHIR resource id")
CRITERION_IDS = [cid for cid, _ in CRITERIA]


class EvidenceSchema(Schema):
    reference = fields.String(required=True, metadata={"example": "Observation/77/_history/2"})
    summary = fields.String(required=True)


class CriterionSchema(Schema):
    id = fields.String(required=True, validate=validate.OneOf(CRITERION_IDS))
    kind = fields.String(
        required=True, validate=validate.OneOf(["inclusion", "exclusion", "informational"])
    )
    result = fields.String(
        required=True, validate=validate.OneOf(["met", "not-met", "unknown", "manual"])
    )
    reason = fields.String(required=True)
    evidence = fields.List(fields.Nested(EvidenceSchema), required=True)


class StrataSchema(Schema):
    metastases = fields.String(allow_none=True, validate=validate.OneOf(["1", ">1"]))
    localization = fields.String(
        allow_none=True, validate=validate.OneOf(["local-N-M1a", "M1b-M1c"])
    )
    systemic_therapy = fields.String(allow_none=True, validate=validate.OneOf(["type-1", "type-2"]))


class ResultSchema(Schema):
    """The screen result of criteria.md §7."""

    patient = fields.String(required=True, metadata={"example": "Patient/123"})
    study = fields.String(required=True, metadata={"example": "NCT06585007"})
    as_of = fields.String(required=True, metadata={"example": "2026-11-26"})
    status = fields.String(required=True, validate=validate.OneOf(["candidate", "ineligible"]))
    patient_type = fields.Integer(allow_none=True, required=True)
    strata = fields.Nested(StrataSchema, required=True)
    needs_review = fields.List(fields.String(), required=True)
    missing_data = fields.List(fields.String(), required=True)
    criteria = fields.List(fields.Nested(CriterionSchema), required=True)
    rules_version = fields.String(required=True)
    software_version = fields.String(required=True)
    notes = fields.List(fields.String())


class ScreenRequestSchema(Schema):
    patient = fields.String(required=True, validate=FHIR_ID, metadata={"description": "Patient id"})
    as_of = fields.Date(
        load_default=None, metadata={"description": "screening date; default today"}
    )
    write_back = fields.Boolean(
        load_default=False, metadata={"description": "write the result to the FHIR server"}
    )


class ScreenResponseSchema(Schema):
    result = fields.Nested(ResultSchema, required=True)
    changed = fields.Boolean(
        required=True, metadata={"description": "content differs from the previous result"}
    )
    write_back = fields.String(
        allow_none=True,
        metadata={
            "description": "written | unchanged | skip-ineligible | skip-managed | queued; null when not asked"
        },
    )


class RunRequestSchema(Schema):
    patients = fields.List(
        fields.String(validate=FHIR_ID), validate=validate.Length(min=1, max=100_000)
    )
    search = fields.String(
        validate=validate.Regexp(
            r"^Patient(\?.*)?\Z",
            error="must be a Patient search, e.g. 'Patient?_has:Condition:patient:code=...'",
        ),
    )
    group = fields.String(validate=FHIR_ID)
    as_of = fields.Date(load_default=None)
    write_back = fields.Boolean(load_default=False)

    @validates_schema
    def exactly_one_population(self, data: dict[str, Any], **_: Any) -> None:
        given = [k for k in ("patients", "search", "group") if k in data]
        if len(given) != 1:
            raise ValidationError("give exactly one of 'patients', 'search' or 'group'", "_schema")


class ProgressSchema(Schema):
    total = fields.Integer()
    pending = fields.Integer()
    in_progress = fields.Integer()
    done = fields.Integer()
    failed = fields.Integer()
    candidate = fields.Integer()
    ineligible = fields.Integer()


class RunWritebacksSchema(Schema):
    pending = fields.Integer(metadata={"description": "queued or being retried"})
    done = fields.Integer(metadata={"description": "on the FHIR server"})
    failed = fields.Integer(metadata={"description": "given up: the server refuses them"})
    skipped = fields.Integer(metadata={"description": "superseded by a newer result"})
    last_error = fields.String(
        allow_none=True,
        metadata={"description": "why the newest pending or failed write-back failed"},
    )


class RunLinksSchema(Schema):
    self = fields.String()
    results = fields.String()
    summary = fields.String()
    cancel = fields.String()


class RunSchema(Schema):
    id = fields.String(required=True)
    kind = fields.String(required=True, validate=validate.OneOf(["ids", "search", "group", "file"]))
    status = fields.String(
        required=True, validate=validate.OneOf(["queued", "running", "done", "failed", "cancelled"])
    )
    as_of = fields.String(required=True)
    look_back = fields.Boolean(
        required=True,
        metadata={
            "description": "as_of before the service's date: the results are a look back, "
            "never the current result, never in the changes feed, never written back"
        },
    )
    write_back = fields.Boolean(required=True)
    created_at = fields.String(required=True)
    started_at = fields.String(allow_none=True)
    finished_at = fields.String(allow_none=True)
    error = fields.String(allow_none=True)
    progress = fields.Nested(ProgressSchema, required=True)
    writebacks = fields.Nested(
        RunWritebacksSchema,
        required=True,
        metadata={"description": "the write-backs of this run's results (outbox states)"},
    )
    links = fields.Nested(RunLinksSchema, required=True)


class PageArgsSchema(Schema):
    class Meta:
        # an unknown parameter is an error, not ignored: `?curser=...` must not silently
        # restart a changes feed from the beginning
        unknown = RAISE

    cursor = fields.String(load_default=None, validate=validate.Length(max=200))
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=500))


class RunResultItemSchema(Schema):
    position = fields.Integer()
    patient = fields.String()
    state = fields.String(metadata={"description": "pending | in-progress | done | failed"})
    error = fields.String(allow_none=True)
    result = fields.Nested(ResultSchema, allow_none=True)


class RunResultsPageSchema(Schema):
    items = fields.List(fields.Nested(RunResultItemSchema), required=True)
    next_cursor = fields.String(allow_none=True, required=True)


class CriterionAttritionSchema(Schema):
    id = fields.String()
    not_met = fields.Integer(data_key="not-met", attribute="not-met")
    kind = fields.String()
    met = fields.Integer()
    # data_key: "unknown" is a reserved attribute name on a marshmallow Schema
    unknown_count = fields.Integer(data_key="unknown", attribute="unknown")
    manual = fields.Integer()
    ruled_out = fields.Integer()
    left = fields.Integer()


def _stratum_counts() -> fields.Dict:
    return fields.Dict(keys=fields.String(), values=fields.Integer())


class StrataCountsSchema(Schema):
    """Among candidates, how many have each value of a stratum ('not known' included)."""

    metastases = _stratum_counts()
    localization = _stratum_counts()
    systemic_therapy = _stratum_counts()


class TiersSchema(Schema):
    """The funnel in tiers (service/report.py Tiers)."""

    ready_for_board = fields.Integer(metadata={"description": "candidate, nothing missing"})
    candidate_data_to_chase = fields.Integer()
    ineligible = fields.Integer()
    strata_among_candidates = fields.Nested(StrataCountsSchema)


class AttritionSchema(Schema):
    screened = fields.Integer()
    candidate = fields.Integer()
    ineligible = fields.Integer()
    failed = fields.Integer()
    criteria = fields.List(fields.Nested(CriterionAttritionSchema))
    tiers = fields.Nested(TiersSchema)


class FeedDispositionSchema(Schema):
    code = fields.String(required=True)
    by = fields.String(required=True)
    at = fields.String(required=True)


class ChangeItemSchema(Schema):
    seq = fields.Integer(
        required=True, metadata={"description": "the change's number: increasing, in commit order"}
    )
    patient = fields.String(required=True)
    previous_status = fields.String(
        required=True,
        allow_none=True,
        metadata={"description": "the status before this change; null for the first result"},
    )
    status = fields.String(required=True)
    changed_criteria = fields.List(
        fields.String(),
        required=True,
        allow_none=True,
        metadata={
            "description": "ids of the criteria whose result or reason changed (all of them "
            "for the first result; null for changes recorded before this field existed)"
        },
    )
    trigger = fields.String(
        required=True,
        allow_none=True,
        validate=validate.OneOf(sorted(TRIGGERS)),
        metadata={"description": "why the screen ran; null when not said"},
    )
    source = fields.String(
        required=True,
        allow_none=True,
        metadata={
            "description": "where the data came from: the FHIR server's base URL or "
            "'files:<path>'; null when not said"
        },
    )
    as_of = fields.String(required=True)
    fingerprint = fields.String(
        required=True,
        metadata={
            "description": "digest of the result's decision (status, patient type, each "
            "criterion's result and reason, rules version): a new one means a change"
        },
    )
    created_at = fields.String(required=True)
    result = fields.Nested(ResultSchema, required=True)
    disposition = fields.Nested(
        FeedDispositionSchema,
        required=True,
        allow_none=True,
        metadata={
            "description": "the coordinators' disposition (code, who, when) current when the "
            "entry was made; null when none was recorded by then"
        },
    )


class ChangesPageSchema(Schema):
    items = fields.List(fields.Nested(ChangeItemSchema), required=True)
    next_cursor = fields.String(
        required=True,
        metadata={
            "description": "pass it back to get the next changes; an empty page means: poll again later"
        },
    )


class NotificationAnswerSchema(Schema):
    """What a notification led to (counts and resource types only)."""

    changes = fields.Integer(required=True, metadata={"description": "changes it named"})
    queued = fields.Integer(
        required=True, metadata={"description": "patients of the population queued"}
    )
    sweep = fields.List(
        fields.String(),
        required=True,
        metadata={"description": "resource types left to the next sweep ('*': all)"},
    )


class HealthSchema(Schema):
    status = fields.String(required=True)
    checks = fields.Dict(keys=fields.String(), values=fields.Boolean())
    stale_sweeps = fields.List(
        fields.String(),
        metadata={"description": "resource types not swept for longer than the allowed age"},
    )
