"""Criteria that EHR data cannot decide: always `manual`, always needing review."""

from __future__ import annotations

from service.screening.criterion import manual
from service.screening.decision import Kind

CONSENT = manual(
    "consent",
    Kind.INCLUSION,
    "Written informed consent is obtained at enrolment; it cannot be read from the record.",
)
COMPLIANCE = manual(
    "compliance",
    Kind.INCLUSION,
    "Psychological, sociological or geographical conditions hampering compliance "
    "need the treating team's judgement.",
)
TUMOUR_BOARD = manual(
    "tumour-board",
    Kind.INCLUSION,
    "Presentation to and approval by the multidisciplinary tumour board is to be done.",
)
SBRT_CONTRAINDICATED = manual(
    "sbrt-contraindicated",
    Kind.EXCLUSION,
    "Whether previous treatments or comorbidities make SBRT impossible is a "
    "radiation oncologist's judgement.",
)
UNABLE_TO_CONSENT = manual(
    "unable-to-consent",
    Kind.EXCLUSION,
    "Whether the patient can understand the protocol and sign consent needs a person to judge.",
)
