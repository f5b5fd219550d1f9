"""Marshmallow schemas of /v1/cohorts: what a cohort definition may carry and how one reads.

Apart from service/api/schemas.py because cohorts are their own resource (issue 14 item 1);
the field rules are the runs' (FHIR ids, Patient searches), reused from there. The search's
parameters and the cron text are checked by the use cases (service/cohorts.py), which the
command line shares, so both refuse the same things with the same words.
"""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from service.api.schemas import FHIR_ID
from service.cohorts import MAX_LIST, NAME
from service.store.models import DEFAULT_COHORT_SCHEDULE, CohortKind

POPULATIONS = ("patients", "search", "group")


class CohortDefinitionSchema(Schema):
    """The body of PUT /v1/cohorts/<name>: exactly one population, and a schedule."""

    patients = fields.List(
        fields.String(validate=FHIR_ID), validate=validate.Length(min=1, max=MAX_LIST),
        metadata={"description": "a list cohort: these patient ids"},
    )  # fmt: skip
    search = fields.String(
        validate=validate.Regexp(r"^Patient\?.+\Z", error="must be a Patient search"),
        metadata={"description": "a Patient search selecting by clinical data (allow-listed "
                  "parameters, MEDCARE_RUN_SEARCH_PARAMS)"},
    )  # fmt: skip
    group = fields.String(validate=FHIR_ID, metadata={"description": "a FHIR Group id"})
    schedule = fields.String(
        load_default=None, validate=validate.Length(max=120),
        metadata={"description": "cron (minute hour day month weekday) of the members' "
                  f"re-screen; default {DEFAULT_COHORT_SCHEDULE!r} (nightly)"},
    )  # fmt: skip

    @validates_schema
    def exactly_one_population(self, data: dict[str, Any], **_: Any) -> None:
        if len([k for k in POPULATIONS if k in data]) != 1:
            raise ValidationError("give exactly one of 'patients', 'search' or 'group'", "_schema")


class CohortRequestSchema(CohortDefinitionSchema):
    """The body of POST /v1/cohorts: a new cohort's name and definition."""

    name = fields.String(
        required=True,
        validate=validate.Regexp(
            rf"^{NAME.pattern}\Z", error="1 to 64 letters, digits, '_', '.' or '-'"
        ),
    )


class CohortLinksSchema(Schema):
    self = fields.String()
    refresh = fields.String()


class CohortSchema(Schema):
    name = fields.String(required=True)
    kind = fields.String(required=True, validate=validate.OneOf([k.value for k in CohortKind]))
    patients = fields.List(fields.String(), metadata={"description": "a list cohort's ids"})
    search = fields.String(metadata={"description": "a search cohort's Patient search"})
    group = fields.String(metadata={"description": "a Group cohort's Group id"})
    schedule = fields.String(required=True)
    members = fields.Integer(
        required=True, metadata={"description": "patients it held at its last refresh"}
    )
    refreshed_at = fields.String(allow_none=True)
    created_at = fields.String(required=True)
    updated_at = fields.String(required=True)
    links = fields.Nested(CohortLinksSchema, required=True)


class CohortListSchema(Schema):
    items = fields.List(fields.Nested(CohortSchema), required=True)
