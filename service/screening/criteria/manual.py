"""Criteria that EHR data cannot decide: always `manual`, always needing review."""

from __future__ import annotations

from collections.abc import Callable

from service.screening.context import Context
from service.screening.result import Decision, Result

_MANUAL_REASONS = {
    "consent": "Written informed consent is obtained at enrolment; it cannot be read from the record.",
    "compliance": (
        "Psychological, sociological or geographical conditions hampering compliance "
        "need the treating team's judgement."
    ),
    "tumour-board": "Presentation to and approval by the multidisciplinary tumour board is to be done.",
    "sbrt-contraindicated": (
        "Whether previous treatments or comorbidities make SBRT impossible is a "
        "radiation oncologist's judgement."
    ),
    "unable-to-consent": (
        "Whether the patient can understand the protocol and sign consent needs a person to judge."
    ),
}


def manual(criterion_id: str) -> Callable[[Context], Decision]:
    reason = _MANUAL_REASONS[criterion_id]

    def decide(_: Context) -> Decision:
        return Decision(Result.MANUAL, reason)

    decide.__name__ = criterion_id.replace("-", "_")
    return decide
