"""A hand-built screen result with everything the write-back must carry, and tiny checkers."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from service.screening.result import (
    CRITERIA,
    CriterionResult,
    Evidence,
    Kind,
    Result,
    ScreenResult,
    Status,
)

PATIENT = "Patient/123"
TESTOSTERONE = Evidence("Observation/77/_history/2", "Testosterone 1.2 nmol/L, 2026-10-30")
PSMA = Evidence("Observation/80/_history/1", "PSMA PET: 2 progressive lesions, 2026-11-02")
ECOG = Evidence("Observation/81/_history/5", "ECOG 1, 2026-11-10")
ADT = Evidence("MedicationStatement/9/_history/1", "Leuprolide depot since 2024-02-01")
DIAGNOSIS = Evidence("Condition/5/_history/1", "Acinar adenocarcinoma of prostate (8140/3)")
TRICKY_REASON = 'PSA "rising" <2 weeks & ECOG 1 <b>bold?</b>'

# The 13 codes of http://hl7.org/fhir/research-subject-status (codes.md §9).
RESEARCH_SUBJECT_STATUSES = frozenset(
    {
        "candidate",
        "eligible",
        "follow-up",
        "ineligible",
        "not-registered",
        "off-study",
        "on-study",
        "on-study-intervention",
        "on-study-observation",
        "pending-on-study",
        "potential-candidate",
        "screening",
        "withdrawn",
    }
)

_DECIDED: dict[str, tuple[Result, str, tuple[Evidence, ...]]] = {
    "consent": (Result.MANUAL, "Written informed consent is obtained by the investigators.", ()),
    "histology": (Result.MET, "Acinar adenocarcinoma of the prostate.", (DIAGNOSIS,)),
    "oligoprogression": (Result.MET, "2 progressive lesions within 42 days.", (PSMA,)),
    "systemic-therapy": (Result.MET, "On ADT since 2024-02-01: type 2.", (ADT,)),
    "castrate-testosterone": (
        Result.MET,
        "Total testosterone 1.2 nmol/L (34.6 ng/dL) on 2026-10-30, below 50 ng/dL.",
        (TESTOSTERONE,),
    ),
    "performance-status": (Result.MET, TRICKY_REASON, (ECOG, PSMA)),
    "testosterone-above-castrate": (
        Result.NOT_MET,
        "Latest total testosterone is castrate.",
        (TESTOSTERONE,),
    ),
    "compliance": (Result.MANUAL, "Judged by the investigators.", ()),
    "tumour-board": (Result.MANUAL, "Decided by the tumour board.", ()),
}


def make_result(**changes: Any) -> ScreenResult:
    """A candidate with every criterion of §3; keyword arguments replace top-level fields."""
    criteria = tuple(
        CriterionResult(
            criterion_id,
            kind,
            *_DECIDED.get(
                criterion_id,
                (
                    Result.NOT_MET if kind is Kind.EXCLUSION else Result.MET,
                    f"Nothing in the record for {criterion_id}.",
                    (),
                ),
            ),
        )
        for criterion_id, kind in CRITERIA
    )
    result = ScreenResult(
        patient=PATIENT,
        study="NCT06585007",
        as_of="2026-11-26",
        status=Status.CANDIDATE,
        patient_type=2,
        strata={"metastases": "1", "localization": "M1b-M1c", "systemic_therapy": "type-2"},
        needs_review=("consent", "compliance", "tumour-board"),
        missing_data=(),
        criteria=criteria,
        rules_version="medcare-2",
        software_version="0.1.0",
    )
    return replace(result, **changes)


def with_criterion(result: ScreenResult, criterion_id: str, /, **changes: Any) -> ScreenResult:
    """The result with one criterion changed."""
    criteria = tuple(replace(c, **changes) if c.id == criterion_id else c for c in result.criteria)
    return replace(result, criteria=criteria)


def ineligible_result() -> ScreenResult:
    """Ruled out by castrate-testosterone (not met), which also leaves missing data elsewhere."""
    result = with_criterion(
        make_result(status=Status.INELIGIBLE, patient_type=None),
        "castrate-testosterone",
        result=Result.NOT_MET,
        reason="Total testosterone 3.1 nmol/L (89.4 ng/dL) on 2026-10-30, not below 50 ng/dL.",
    )
    return replace(
        with_criterion(result, "performance-status", result=Result.UNKNOWN, evidence=()),
        strata={"metastases": None, "localization": None, "systemic_therapy": None},
        needs_review=("consent", "performance-status", "compliance", "tumour-board"),
        missing_data=("performance-status",),
        notes=("Observation/99: not a FHIR resource, skipped",),
    )


def extension_problems(element: Any, path: str = "") -> list[str]:
    """FHIR ext-1 everywhere: an extension has a value or sub-extensions, never both or neither."""
    problems: list[str] = []
    if isinstance(element, dict):
        for key, value in element.items():
            if key == "extension":
                for i, extension in enumerate(value):
                    has_value = any(k.startswith("value") for k in extension)
                    has_parts = bool(extension.get("extension"))
                    if has_value == has_parts:
                        problems.append(f"{path}.extension[{i}] {extension.get('url')}")
            problems += extension_problems(value, f"{path}.{key}")
    elif isinstance(element, list):
        for i, item in enumerate(element):
            problems += extension_problems(item, f"{path}[{i}]")
    return problems
