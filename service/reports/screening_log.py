"""The screening log as CSV, in the shape of an ICH-GCP screening log (ICH E6 8.3.20).

Two audiences, one set of columns:

* site (identified, kept at the site): the patient id, full dates, and the disposition's
  reason as the coordinator wrote it;
* sponsor (de-identified, sent out): no id and no name, a screening number that is only a
  sequence (rows ordered by their own content, so neither number nor order derives from an
  id), dates to the month (YYYY-MM), the reason not enrolled as a code only (free text may
  name a person), and counts under 5 in the summary shown as "<5".

Why the summary rows: a sponsor wants the counts per eligibility status and disposition; small
cells there are what re-identifies, so they are suppressed. Every cell is made safe for
spreadsheets: one starting with = + - @ (or a tab / carriage return) gets a leading ' so it is
never run as a formula (CSV injection).
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from service.store.population_report import PopulationRow

SMALL_CELL = 5
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
NOT_RECORDED = "none recorded"


class Audience(StrEnum):
    SITE = "site"
    SPONSOR = "sponsor"


COLUMNS = (
    "screening_number", "date_screened", "patient_type", "eligibility_status",
    "reason_not_eligible", "disposition", "date_of_disposition", "enrolled",
    "reason_not_enrolled",
)  # fmt: skip


@dataclass(frozen=True)
class LogLine:
    """One patient's line, before numbering (the site's id kept apart from the columns)."""

    patient: str
    cells: dict[str, str]


def safe_cell(value: str) -> str:
    """`value`, prefixed with ' when a spreadsheet would read it as a formula."""
    return "'" + value if value.startswith(FORMULA_STARTS) else value


def ruled_out_by(body: dict[str, object]) -> list[str]:
    """The criteria that alone make this result ineligible (inclusion not met, exclusion met)."""
    criteria = body.get("criteria")
    return [
        str(c["id"])
        for c in (criteria if isinstance(criteria, list) else [])
        if (c.get("kind"), c.get("result")) in (("inclusion", "not-met"), ("exclusion", "met"))
    ]


def _line(row: PopulationRow, audience: Audience) -> LogLine:
    site = audience == Audience.SITE
    disposition = row.disposition
    code = disposition.code if disposition else NOT_RECORDED
    enrolled = code == "enrolled"
    if enrolled:
        why_not = ""
    elif site and disposition and disposition.reason:
        why_not = disposition.reason  # the coordinator's words, kept at the site only
    else:
        why_not = code
    decided = ""
    if disposition:
        decided = disposition.recorded_at.date().isoformat() if site else (
            disposition.recorded_at.strftime("%Y-%m")
        )  # fmt: skip
    patient_type = row.body.get("patient_type")
    cells = {
        "date_screened": row.as_of.isoformat() if site else row.as_of.strftime("%Y-%m"),
        "patient_type": str(patient_type) if isinstance(patient_type, int) else "",
        "eligibility_status": str(row.body.get("status", "")),
        "reason_not_eligible": " ".join(ruled_out_by(row.body)),
        "disposition": code,
        "date_of_disposition": decided,
        "enrolled": "yes" if enrolled else "no",
        "reason_not_enrolled": why_not,
    }
    return LogLine(row.patient, cells)


def count_cell(count: int, audience: Audience) -> str:
    """A summary count as the audience may see it: under 5 (and above 0) is "<5" for the
    sponsor."""
    if audience == Audience.SPONSOR and 0 < count < SMALL_CELL:
        return f"<{SMALL_CELL}"
    return str(count)


def screening_log_csv(rows: Iterable[PopulationRow], audience: Audience) -> str:
    """The CSV text: a header, one line per current result, a blank line, the summary."""
    lines = [_line(row, audience) for row in rows]
    if audience == Audience.SPONSOR:
        lines.sort(key=lambda line: tuple(line.cells[c] for c in COLUMNS[1:]))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    header = (*COLUMNS[:1], "patient_id", *COLUMNS[1:]) if audience == Audience.SITE else COLUMNS
    writer.writerow(header)
    for number, line in enumerate(lines, start=1):
        identified = [line.patient] if audience == Audience.SITE else []
        values = [f"S{number:05d}", *identified, *(line.cells[c] for c in COLUMNS[1:])]
        writer.writerow([safe_cell(value) for value in values])
    writer.writerow([])
    writer.writerow(["summary", "category", "value", "count"])
    writer.writerow(["summary", "screened", "all", count_cell(len(lines), audience)])
    for column in ("eligibility_status", "disposition", "enrolled"):
        counts = Counter(line.cells[column] for line in lines)
        for value, count in sorted(counts.items()):
            writer.writerow(
                [safe_cell(v) for v in ("summary", column, value, count_cell(count, audience))]
            )
    return out.getvalue()
