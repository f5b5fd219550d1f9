"""Schemas of a patient's review (issue 15 items 3 and 4): dispositions, manual answers,
history, and the latest result shown with them.

Request fields are plain strings here on purpose: their codes and lengths are checked by the
use cases (service/dispositions.py), which answer 400 naming the field, the same for the API
and the web page.
"""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from service.api.schemas import ResultSchema
from service.dispositions import MANUAL_CRITERIA, MAX_NOTE_CHARS, Answer, Disposition

NOTE = {"description": f"free text, at most {MAX_NOTE_CHARS} characters"}


class EntrySchema(Schema):
    """One coordinator's entry: who (`by`), when (`at`), what (`code`), and why."""

    version = fields.Integer(required=True)
    kind = fields.String(required=True, validate=validate.OneOf(["disposition", "manual"]))
    criterion = fields.String(metadata={"description": "the manual criterion answered"})
    code = fields.String(required=True, metadata={"description": "disposition or answer"})
    reason = fields.String(allow_none=True)
    note = fields.String(allow_none=True)
    by = fields.String(required=True, metadata={"description": "the author's subject id"})
    at = fields.String(required=True, metadata={"example": "2026-11-26T09:30:00+00:00"})


class ReviewSchema(Schema):
    """A patient's review now; `version` is also the ETag."""

    patient = fields.String(required=True, metadata={"example": "Patient/123"})
    version = fields.Integer(required=True)
    disposition = fields.Nested(EntrySchema, allow_none=True, required=True)
    manual_answers = fields.Dict(
        keys=fields.String(validate=validate.OneOf(MANUAL_CRITERIA)),
        values=fields.Nested(EntrySchema),
        required=True,
    )


class ManualAnswerSchema(Schema):
    """One manual criterion's current answer (null before anyone answered)."""

    patient = fields.String(required=True)
    criterion = fields.String(required=True, validate=validate.OneOf(MANUAL_CRITERIA))
    version = fields.Integer(required=True)
    answer = fields.Nested(EntrySchema, allow_none=True, required=True)


class DispositionRequestSchema(Schema):
    code = fields.String(required=True, metadata={"enum": [d.value for d in Disposition]})
    reason = fields.String(
        load_default=None, allow_none=True, metadata={"description": "required for not-eligible"}
    )
    note = fields.String(load_default=None, allow_none=True, metadata=NOTE)


class ManualAnswerRequestSchema(Schema):
    answer = fields.String(required=True, metadata={"enum": [a.value for a in Answer]})
    note = fields.String(load_default=None, allow_none=True, metadata=NOTE)


class HistoryItemSchema(Schema):
    """A change of the automatic result (`type` result) or a coordinator's entry."""

    type = fields.String(
        required=True, validate=validate.OneOf(["result", "disposition", "manual"])
    )
    at = fields.String(required=True)
    seq = fields.Integer()
    status = fields.String()
    previous_status = fields.String(allow_none=True)
    changed_criteria = fields.List(fields.String(), allow_none=True)
    trigger = fields.String(allow_none=True)
    as_of = fields.String()
    version = fields.Integer()
    kind = fields.String()
    criterion = fields.String()
    code = fields.String()
    reason = fields.String(allow_none=True)
    note = fields.String(allow_none=True)
    by = fields.String()


class HistorySchema(Schema):
    patient = fields.String(required=True)
    items = fields.List(fields.Nested(HistoryItemSchema), required=True)


class ReviewedResultSchema(ResultSchema):
    """The latest result and, under keys of their own, what people recorded about it (never
    mixed into `criteria`)."""

    disposition = fields.Nested(EntrySchema, allow_none=True)
    manual_answers = fields.Dict(keys=fields.String(), values=fields.Nested(EntrySchema))
    review_version = fields.Integer(metadata={"description": "the review's ETag"})
