"""CDS Hooks 2.0 feedback: what the clinician did with a card (accepted, or overridden with a
reason), per card uuid.

The body is checked against the 2.0 shape (an override's reason must be one the card offered);
each entry is kept like a coordinator's entry, append-only, with who (the EHR token's `sub`),
when (the EHR's `outcomeTimestamp` and ours), the outcome, the reason and the comment, joined
to the patient of the card the service issued (service/store/cds_feedback.py). The log line
says the same with ids and codes only (a comment is free text and may name the patient).
"""

from __future__ import annotations

import logging
from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from service.api.cds_cards import OVERRIDE_CODES, OVERRIDE_SYSTEM
from service.store.cds_feedback import CardFeedback, CdsFeedbackStore

LOG = logging.getLogger("medcare.cds.feedback")


class ReasonCodingSchema(Schema):
    system = fields.String()
    code = fields.String(required=True, validate=validate.Length(max=64))
    display = fields.String(validate=validate.Length(max=200))


class OverrideReasonSchema(Schema):
    reason = fields.Nested(ReasonCodingSchema)
    userComment = fields.String(validate=validate.Length(max=1000))


class SuggestionIdSchema(Schema):
    id = fields.String(required=True, validate=validate.Length(max=64))


class FeedbackSchema(Schema):
    card = fields.UUID(required=True)
    outcome = fields.String(required=True, validate=validate.OneOf(["accepted", "overridden"]))
    acceptedSuggestions = fields.List(fields.Nested(SuggestionIdSchema))
    overrideReason = fields.Nested(OverrideReasonSchema)
    outcomeTimestamp = fields.AwareDateTime(required=True)

    @validates_schema
    def _reason_is_ours(self, data: dict[str, Any], **_: Any) -> None:
        """An override's coded reason is one the card offered; a free-text comment alone is
        allowed (the EHR may let the clinician only type one)."""
        coding = (data.get("overrideReason") or {}).get("reason")
        if coding is None:
            return
        if data["outcome"] != "overridden":
            raise ValidationError("an overrideReason goes with outcome 'overridden'")
        if coding.get("system", OVERRIDE_SYSTEM) != OVERRIDE_SYSTEM or (
            coding["code"] not in OVERRIDE_CODES
        ):
            raise ValidationError("not one of the card's overrideReasons", "overrideReason")


class FeedbackRequestSchema(Schema):
    feedback = fields.List(
        fields.Nested(FeedbackSchema), required=True, validate=validate.Length(min=1, max=50)
    )


def record_feedback(
    store: CdsFeedbackStore, entries: list[dict[str, Any]], *, author: str
) -> list[CardFeedback]:
    """Keep each entry; log it with ids and codes only, never the clinician's comment."""
    recorded = []
    for entry in entries:
        override = entry.get("overrideReason") or {}
        kept = store.record_card_feedback(
            str(entry["card"]), entry["outcome"], author=author,
            outcome_at=entry["outcomeTimestamp"],
            reason_code=(override.get("reason") or {}).get("code"),
            comment=override.get("userComment") or None,
        )  # fmt: skip
        LOG.info(
            "cds feedback card=%s patient=%s outcome=%s reason=%s author=%s",
            kept.card, kept.patient_id, kept.outcome, kept.reason_code, kept.author,
        )  # fmt: skip
        recorded.append(kept)
    return recorded
