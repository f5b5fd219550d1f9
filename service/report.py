"""Human-readable renderings of screen results: the table and the attrition summary."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from service.screening.result import CRITERIA, Result, ScreenResult

RESULT_ORDER = (Result.MET, Result.NOT_MET, Result.UNKNOWN, Result.MANUAL)
STRATA = ("metastases", "localization", "systemic_therapy")
NOT_KNOWN = "not known"


class Tiers:
    """The funnel in tiers (issue 12 item 10, criteria.md §2): ready for the board (candidate,
    nothing missing), candidate with data to chase, ineligible; and, among candidates, the
    spread of each stratum (criteria.md §6), so a coordinator sees what the board will get."""

    def __init__(self) -> None:
        self.ready = 0
        self.chase = 0
        self.ineligible = 0
        self.strata: dict[str, Counter[str]] = {name: Counter() for name in STRATA}

    def add(
        self, status: str, missing_data: Sequence[str], strata: Mapping[str, str | None]
    ) -> None:
        if status != "candidate":
            self.ineligible += 1
            return
        if missing_data:
            self.chase += 1
        else:
            self.ready += 1
        for name in STRATA:
            self.strata[name][strata.get(name) or NOT_KNOWN] += 1

    def add_body(self, body: Mapping[str, Any]) -> None:
        """Count a stored §7 result (a dict, as the store and the API hold it)."""
        self.add(
            str(body.get("status")),
            list(body.get("missing_data") or ()),
            dict(body.get("strata") or {}),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "ready_for_board": self.ready,
            "candidate_data_to_chase": self.chase,
            "ineligible": self.ineligible,
            "strata_among_candidates": {
                name: dict(sorted(counts.items())) for name, counts in self.strata.items()
            },
        }

    def text(self) -> str:
        lines = [
            f"Ready for the board (candidate, nothing missing): {self.ready}",
            f"Candidate, data to chase: {self.chase}",
            f"Ineligible: {self.ineligible}",
        ]
        if self.ready + self.chase:
            lines.append("Strata among candidates:")
            for name, counts in self.strata.items():
                spread = ", ".join(f"{value} {n}" for value, n in sorted(counts.items()))
                lines.append(f"  {name}: {spread}")
        return "\n".join(lines)


def tiers_of(bodies: Iterable[Mapping[str, Any] | None]) -> Tiers:
    """Tiers over stored results (None: a patient not screened yet, or failed: not counted)."""
    tiers = Tiers()
    for body in bodies:
        if body is not None:
            tiers.add_body(body)
    return tiers


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


class Report:
    """The table and the attrition funnel, built one result at a time.

    It keeps a short row per patient and a few counters, not the results themselves, so a
    population screen's memory does not grow with the results' reasons and evidence.
    """

    def __init__(self) -> None:
        self.rows: list[list[str]] = []
        self.counts: dict[str, Counter[Result]] = {cid: Counter() for cid, _ in CRITERIA}
        # patients ruled out for the first time at each criterion (the funnel's steps)
        self.first_ruled_out: Counter[str] = Counter()
        self.candidates = 0
        self.tiers = Tiers()

    def add(self, result: ScreenResult) -> None:
        self.rows.append(patient_row(result))
        ruled_out_at = None
        for criterion_id, _kind in CRITERIA:
            criterion = result.criterion(criterion_id)
            self.counts[criterion_id][criterion.result] += 1
            if ruled_out_at is None and criterion.rules_out():
                ruled_out_at = criterion_id
        if ruled_out_at is not None:
            self.first_ruled_out[ruled_out_at] += 1
        if result.status.value == "candidate":
            self.candidates += 1
        self.tiers.add(result.status.value, result.missing_data, result.strata)

    def table(self) -> str:
        headers = ("patient", "status", "type", "ruled out by", "needs review")
        return _table(headers, self.rows)

    def summary(self) -> str:
        """Per criterion: counts of each result, and patients still eligible after it."""
        total = len(self.rows)
        remaining = total
        rows = []
        for criterion_id, kind in CRITERIA:
            remaining -= self.first_ruled_out[criterion_id]
            counts = self.counts[criterion_id]
            rows.append(
                [criterion_id, kind.value, *(str(counts[r]) for r in RESULT_ORDER), str(remaining)]
            )
        headers = ("criterion", "kind", "met", "not-met", "unknown", "manual", "left")
        footer = (
            f"\n{total} patients screened: {self.candidates} candidate, "
            f"{total - self.candidates} ineligible."
        )
        return _table(headers, rows) + footer + "\n" + self.tiers.text()
