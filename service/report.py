"""Human-readable renderings of screen results: the table and the attrition summary."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from service.screening.result import CRITERIA, Result, ScreenResult

RESULT_ORDER = (Result.MET, Result.NOT_MET, Result.UNKNOWN, Result.MANUAL)


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()
    rule = "  ".join("-" * w for w in widths)
    body = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join([line, rule, *body])


def patient_row(result: ScreenResult) -> list[str]:
    ruled_out = [c.id for c in result.criteria if c.rules_out()]
    manual = sum(1 for c in result.criteria if c.result is Result.MANUAL)
    review = ", ".join(result.missing_data) or "-"
    return [
        result.patient,
        result.status.value,
        str(result.patient_type) if result.patient_type else "-",
        ", ".join(ruled_out) or "-",
        f"{review} (+{manual} manual)",
    ]


def results_table(results: Sequence[ScreenResult]) -> str:
    headers = ("patient", "status", "type", "ruled out by", "needs review")
    return _table(headers, [patient_row(r) for r in results])


def attrition_summary(results: Sequence[ScreenResult]) -> str:
    """Per criterion: counts of each result, and patients still eligible after it (the funnel)."""
    remaining = {r.patient for r in results}
    rows = []
    for criterion_id, kind in CRITERIA:
        counts: Counter[Result] = Counter()
        for result in results:
            criterion = result.criterion(criterion_id)
            counts[criterion.result] += 1
            if criterion.rules_out():
                remaining.discard(result.patient)
        rows.append(
            [criterion_id, kind.value, *(str(counts[r]) for r in RESULT_ORDER), str(len(remaining))]
        )
    headers = ("criterion", "kind", "met", "not-met", "unknown", "manual", "left")
    candidates = sum(1 for r in results if r.status.value == "candidate")
    footer = f"\n{len(results)} patients screened: {candidates} candidate, {len(results) - candidates} ineligible."
    return _table(headers, rows) + footer
