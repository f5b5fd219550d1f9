"""CDS Hooks 2.0 feedback: what the clinician did with a card (accepted, or overridden with a
reason), per card uuid.

The body is checked against the 2.0 shape (an override's reason must be one the card offered);
each entry is recorded with who (the EHR token's `sub`), when (the EHR's `outcomeTimestamp`
and ours) and what, ids and codes only. The record is the service's log
(`medcare.cds.feedback`): a card uuid names no patient, and there is no table yet that maps the
uuids the service issued to patients, so the entries are not joined to a patient's
coordinator entries (service/dispositions.py) here.
"""

from __future__ import annotations

import logging
from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from service.api.cds_cards import OVERRIDE_CODES, OVERRIDE_SYSTEM
from service.clock import SYSTEM_CLOCK, Clock

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
    entries: list[dict[str, Any]], *, author: str, clock: Clock = SYSTEM_CLOCK
) -> list[dict[str, Any]]:
    """Record each entry (who, when, card, outcome, reason code): the log lines carry ids and
    codes only, never the clinician's comment (free text may name the patient)."""
    recorded = []
    for entry in entries:
        reason = (entry.get("overrideReason") or {}).get("reason") or {}
        line = {
            "card": str(entry["card"]),
            "outcome": entry["outcome"],
            "reason": reason.get("code"),
            "commented": bool((entry.get("overrideReason") or {}).get("userComment")),
            "author": author,
            "outcome_at": entry["outcomeTimestamp"].isoformat(),
            "recorded_at": clock.now().isoformat(),
        }
        LOG.info("cds feedback %s", " ".join(f"{k}={v}" for k, v in line.items()))
        recorded.append(line)
    return recorded
