"""Medication timing against a day (criteria.md §4b): ongoing, given before, finished, placed.

A record's span runs from its start to its explicit end; a depot ADT administration covers its
stated duration (1, 3, 4 or 6 months, else 3), and an active statement or request without an
end is still running. Long-running drugs (ADT, ARTA) keep that simple rule.

Docetaxel is a course, not a standing order (medcare-2): orders are routinely left `active`
after the last cycle, so an active docetaxel record is believed only for 6 months after its
start; a dose covers 28 days (a 21-day cycle and a week of delay); and where administrations are
recorded they decide when the course ended, whatever an earlier order still says.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, timedelta

from service.fhir.dates import add_months
from service.mapping.model import Parameters
from service.screening.context import Context, join_names
from service.screening.decision import Evidence
from service.screening.facts import MedicationFact

# Statuses that say the drug was not (or not yet) given (criteria.md §4b "in the past").
NEVER_GIVEN = {
    "entered-in-error", "not-taken", "intended", "cancelled", "draft", "not-done",
    "do-not-perform", "preparation",
}  # fmt: skip
PAUSED = {"stopped", "on-hold"}
RUNNING = {"active", "in-progress"}
# An active docetaxel record is believed for this long after its start (criteria.md §4b).
DOCETAXEL_ACTIVE_MONTHS = 6
# An active ADT/ARTA order older than this with nothing newer is named in the reason.
LONG_ORDER_MONTHS = 12
# "stopped for progression": the statusReason's words (en, nl, fr, de all start "progress").
_PROGRESSION_WORDS = re.compile(r"progress|worsen|pd\b", re.IGNORECASE)
SOURCE_WORDS = {
    "MedicationStatement": "medication list",
    "MedicationRequest": "order",
    "MedicationAdministration": "administration",
}


@dataclass(frozen=True)
class Span:
    start: date | None
    end: date | None  # last day covered, when known
    open: bool  # still running (active, no end)


def span_of(fact: MedicationFact, params: Parameters) -> Span:
    start = fact.start.earliest if fact.start else None
    end = fact.end.latest if fact.end else None
    if fact.is_administration and start is not None:
        if any(m.drug.depot for m in fact.matches_of("gnrh")):
            months = fact.stated_depot_months or params.default_depot_months
            end = max(end or start, add_months(start, months))
        elif fact.has_class("docetaxel"):
            end = max(end or start, start + timedelta(days=params.docetaxel_cycle_days))
        elif end is None:
            end = start
    running = fact.status in RUNNING and end is None
    return Span(start, end, running)


def was_given(fact: MedicationFact) -> bool:
    return fact.status not in NEVER_GIVEN


def is_ongoing(fact: MedicationFact, day: date, params: Parameters) -> bool:
    """Taken on `day`: active without an end, or a span (period, depot, cycle) covering it."""
    if not was_given(fact) or fact.status in PAUSED:
        return False
    span = span_of(fact, params)
    if span.start is not None and span.start > day:
        return False
    if span.open:
        return True
    return span.end is not None and span.start is not None and span.start <= day <= span.end


def finished_before(fact: MedicationFact, day: date, params: Parameters) -> bool:
    """Given, and over by `day` (an end before it, or a completed/stopped record)."""
    if not was_given(fact) or is_ongoing(fact, day, params):
        return False
    span = span_of(fact, params)
    if span.end is not None:
        return span.end < day
    return fact.status in {"completed", "stopped"}


def drug_names(fact: MedicationFact, drug_class: str | None = None) -> str:
    """'leuprolide', 'radium-223 (recognised by name: 'Xofigo')': clinical words, no codes (the
    codes are in the evidence, criteria.md §7b); a name or ingredient match says so (§4b)."""
    matches = fact.matches_of(drug_class) if drug_class else fact.drugs
    names = []
    for match in matches or fact.drugs:
        how = match.matched_by
        if how.endswith("name"):
            names.append(match.describe())
        elif how.startswith("ingredient"):
            names.append(f"{match.drug.label} (ingredient)")
        else:
            names.append(match.drug.label)
    return join_names(names)


def describe(fact: MedicationFact, params: Parameters, drug_class: str | None = None) -> str:
    """'leuprolide (RxNorm 752899), medication list, active since 2024-01-10' (§7b: clinical
    words first; the resource reference is in the evidence)."""
    span = span_of(fact, params)
    source = SOURCE_WORDS.get(fact.resource_type, fact.resource_type)
    status = fact.status or "no status"
    if fact.is_administration:
        when = f"given on {span.start}" if span.start else "given, date not recorded"
        if fact.status not in (None, "completed"):
            when += f" ({status})"
        return f"{drug_names(fact, drug_class)}, {when}"
    if span.start and span.end and span.end != span.start:
        when = f"{status}, {span.start} to {span.end}"
    elif span.start:
        when = f"{status} since {span.start}" if span.open else f"{status}, from {span.start}"
    else:
        when = f"{status}, no date recorded"
    return f"{drug_names(fact, drug_class)}, {source}, {when}"


# -- docetaxel as a course -------------------------------------------------------------------

ONGOING, FINISHED, END_UNKNOWN, NOT_YET = "ongoing", "finished", "end-unknown", "not-yet"
SUBSUMED = "subsumed"  # an order from before the last recorded dose: the doses decide


@dataclass
class DocetaxelCourse:
    """Docetaxel against one day: what was ongoing, finished or cannot be placed, and why."""

    day: date
    records: list[str] = field(default_factory=list)  # every given record, described
    ongoing: list[str] = field(default_factory=list)
    finished: list[str] = field(default_factory=list)
    end_unknown: list[str] = field(default_factory=list)  # stale active orders, undated, ...
    stopped_for_progression: list[str] = field(default_factory=list)
    not_yet: list[str] = field(default_factory=list)  # started after the day
    evidence: list[Evidence] = field(default_factory=list)
    last_known: str | None = None  # "last dose 2019-04-25 (6 administrations, ...)"

    @property
    def given(self) -> bool:
        return bool(self.ongoing or self.finished or self.end_unknown)


def docetaxel_course(ctx: Context, day: date) -> DocetaxelCourse:
    """Place every given docetaxel record against `day` (criteria.md §4b, medcare-2)."""
    params = ctx.params
    course = DocetaxelCourse(day)
    given = [f for f in ctx.facts.medications_of("docetaxel") if was_given(f)]
    doses = sorted(
        (f.start.earliest, f)
        for f in given
        if f.is_administration and f.start is not None and f.start.earliest <= day
    )
    cover = timedelta(days=params.docetaxel_cycle_days)
    last_dose = doses[-1][0] if doses else None
    for fact in given:
        course.evidence.append(fact.evidence)
        text = describe(fact, params, "docetaxel")
        course.records.append(text)
        if fact.is_administration:
            continue
        state, note = _record_state(fact, day, last_dose, params)
        if state == SUBSUMED:
            continue
        if _stopped_for_progression(fact) and state != ONGOING:
            course.stopped_for_progression.append(
                f"{text}, stopped for {fact.status_reason!r}: did the patient progress while "
                "receiving it?"
            )
            continue
        {ONGOING: course.ongoing, FINISHED: course.finished, END_UNKNOWN: course.end_unknown,
         NOT_YET: course.not_yet}[state].append(f"{text}{note}")  # fmt: skip
    undated = [f for f in given if f.is_administration and f.start is None]
    for fact in undated:
        course.end_unknown.append(f"{describe(fact, params, 'docetaxel')}: no date recorded")
    if last_dose is not None:
        summary = _doses_summary([d for d, _ in doses])
        if day <= last_dose + cover:
            course.ongoing.append(f"{summary}: within {cover.days} days of the last dose")
        else:
            course.finished.append(
                f"{summary}: course over by {last_dose + cover} ({cover.days} days after the "
                "last dose)"
            )
        course.last_known = summary
    later = [f for f in given if f.is_administration and f.start and f.start.earliest > day]
    if later:
        course.not_yet.append(f"{len(later)} dose(s) after {day}")
    if course.last_known is None:
        course.last_known = _last_period(given, params)
    return course


def _record_state(
    fact: MedicationFact, day: date, last_dose: date | None, params: Parameters
) -> tuple[str, str]:
    """(state, note) of an order or statement on `day` (administrations decide before it)."""
    span = span_of(fact, params)
    if span.start is not None and span.start > day:
        return NOT_YET, f", started after {day}"
    if last_dose is not None and (span.start is None or span.start <= last_dose):
        return SUBSUMED, ""
    if span.end is not None and span.start is not None:
        if span.start <= day <= span.end:
            return ONGOING, ""
        return FINISHED, ""
    if span.end is not None:
        return (FINISHED, "") if span.end < day else (END_UNKNOWN, ": start not recorded")
    if fact.status in RUNNING:
        if span.start is None:
            return END_UNKNOWN, ": no start date recorded; ask the day hospital or pharmacy"
        if span.start > add_months(day, -DOCETAXEL_ACTIVE_MONTHS):
            return ONGOING, f" (started less than {DOCETAXEL_ACTIVE_MONTHS} months before {day})"
        return END_UNKNOWN, (
            ": no administration found; given in the past, end "
            "unknown (orders are often left active after the last cycle): ask the day hospital "
            "or pharmacy"
        )
    return END_UNKNOWN, ": end date not recorded, so it cannot be placed against the day"


def _stopped_for_progression(fact: MedicationFact) -> bool:
    return (
        fact.status in PAUSED | {"completed"}
        and fact.status_reason is not None
        and _PROGRESSION_WORDS.search(fact.status_reason) is not None
    )


def _doses_summary(days: list[date]) -> str:
    if len(days) == 1:
        return f"1 docetaxel dose, on {days[0]} (last dose {days[-1]})"
    return f"{len(days)} docetaxel doses, {days[0]} to {days[-1]} (last dose {days[-1]})"


def _last_period(given: list[MedicationFact], params: Parameters) -> str | None:
    dated = [f for f in given if f.start is not None]
    if not dated:
        return "docetaxel recorded without dates" if given else None
    latest = max(dated, key=lambda f: f.start.earliest if f.start else date.min)
    return describe(latest, params, "docetaxel")


@dataclass
class DocetaxelPlacement:
    """The view progression-on-docetaxel reads: ongoing / not ongoing / cannot be placed."""

    records: list[str] = field(default_factory=list)
    ongoing: list[str] = field(default_factory=list)
    not_ongoing: list[str] = field(default_factory=list)
    unplaced: list[str] = field(default_factory=list)
    evidence: list[Evidence] = field(default_factory=list)


def docetaxel_against(ctx: Context, day: date | object | None) -> DocetaxelPlacement:
    """Place every given docetaxel record against the progression day (None: nothing to place).

    A stale active order, an undated record, or a stop for progression cannot be placed: the
    criterion is then `unknown` (criteria.md §3 progression-on-docetaxel, medcare-2)."""
    placement = DocetaxelPlacement()
    progression_day = getattr(day, "earliest", None)
    course = docetaxel_course(ctx, progression_day or ctx.as_of)
    if not course.records:
        return placement
    last = f"last known: {course.last_known}" if course.last_known else ""
    placement.records = [last] if last else list(course.records)
    placement.evidence = list(course.evidence)
    if progression_day is None:
        return placement
    placement.ongoing = course.ongoing
    placement.unplaced = course.stopped_for_progression + course.end_unknown
    placement.not_ongoing = [f"{t}, ended before" for t in course.finished] + [
        t for t in course.not_yet
    ]
    return placement
