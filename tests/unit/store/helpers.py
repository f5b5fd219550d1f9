"""Builders for the store tests, shared by the SQLite unit tests and the PostgreSQL ones."""

from __future__ import annotations

import hashlib
import json
from datetime import date, datetime, timedelta, timezone
from typing import Any

from service.screening.result import CRITERIA
from service.store.repository import Recorded, Store

STUDY = "NCT06585007"
AS_OF = date(2026, 11, 26)
# A non-UTC zone on purpose: the store must keep and compare instants, not wall clocks.
ZONE = timezone(timedelta(hours=2), "CEST")


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 11, 26, 9, 30, tzinfo=ZONE)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


def body(
    patient: str,
    *,
    ruled_out_by: tuple[str, ...] = (),
    unknown: tuple[str, ...] = (),
    as_of: str = AS_OF.isoformat(),
    reason: str = "as documented",
    study: str = STUDY,
) -> dict[str, Any]:
    """A §7 result: every criterion passes except those in `ruled_out_by` (and `unknown`)."""
    criteria: list[dict[str, Any]] = []
    for criterion_id, kind in CRITERIA:
        if criterion_id in unknown:
            outcome = "unknown"
        elif kind.value == "exclusion":
            outcome = "met" if criterion_id in ruled_out_by else "not-met"
        else:
            outcome = "not-met" if criterion_id in ruled_out_by else "met"
        criteria.append(
            {
                "id": criterion_id,
                "kind": kind.value,
                "result": outcome,
                "reason": reason,
                "evidence": [],
            }
        )
    return {
        "patient": patient,
        "study": study,
        "as_of": as_of,
        "status": "ineligible" if ruled_out_by else "candidate",
        "patient_type": 1,
        "strata": {"localization": None, "metastases": None, "systemic_therapy": None},
        "needs_review": [],
        "missing_data": [],
        "criteria": criteria,
        "rules_version": "medcare-1",
        "software_version": "0.1.0",
    }


def fingerprint(result: dict[str, Any]) -> str:
    """A content fingerprint by the project's rule: the result without as_of and the release."""
    content = {k: v for k, v in result.items() if k not in ("as_of", "software_version")}
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def save(
    store: Store, run_id: str | None, result: dict[str, Any], *, write_back: bool | None = None
) -> Recorded:
    """Record `result` for its patient with its fingerprint, as a screening worker does."""
    return store.record_patient_result(
        run_id, result["patient"], result, fingerprint(result), write_back=write_back
    )
