"""Medication timing against a day (criteria.md §4b): ongoing, given before, finished, placed.

A record's span runs from its start to its explicit end; a depot ADT administration covers its
stated duration (1, 3, 4 or 6 months, else 3), a docetaxel administration one three-weekly cycle
(our interpretation), and an active statement or request without an end is still running.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta

from service.fhir.dates import add_months
from service.mapping.model import Parameters
from service.screening.context import Context
from service.screening.facts import MedicationFact
from service.screening.result import Evidence

# Statuses that say the drug was not (or not yet) given (criteria.md §4b "in the past").
NEVER_GIVEN = {"entered-in-error", "not-taken", "intended", "cancelled", "draft", "not-done"}
PAUSED = {"stopped", "on-hold"}
RUNNING = {"active", "in-progress"}


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


def describe(fact: MedicationFact, params: Parameters) -> str:
    """'leuprolide (RxNorm 752899) MedicationStatement active from 2024-01-10 (MedicationStatement/x)'."""
    drugs = ", ".join(m.describe() for m in fact.drugs)
    span = span_of(fact, params)
    when = f" from {span.start}" if span.start else " (no date)"
    if span.end and span.start and span.end != span.start:
        when += f" to {span.end}"
    return f"{drugs}, {fact.resource_type} {fact.status}{when} ({fact.evidence.reference})"


@dataclass
class DocetaxelPlacement:
    records: list[str] = field(default_factory=list)
    ongoing: list[str] = field(default_factory=list)
    not_ongoing: list[str] = field(default_factory=list)
    unplaced: list[str] = field(default_factory=list)
    evidence: list[Evidence] = field(default_factory=list)


def docetaxel_against(ctx: Context, day: date | object | None) -> DocetaxelPlacement:
    """Place every given docetaxel record against the progression day (None: nothing to place)."""
    placement = DocetaxelPlacement()
    progression_day = getattr(day, "earliest", None)
    for fact in ctx.facts.medications_of("docetaxel"):
        if not was_given(fact):
            continue
        text = describe(fact, ctx.params)
        placement.records.append(text)
        placement.evidence.append(fact.evidence)
        if progression_day is None:
            continue
        span = span_of(fact, ctx.params)
        if span.start is None:
            placement.unplaced.append(text)
        elif span.start > progression_day:
            placement.not_ongoing.append(f"{text}, started after")
        elif span.open or (span.end is not None and span.end >= progression_day):
            placement.ongoing.append(text)
        elif span.end is None:
            placement.unplaced.append(text)
        else:
            placement.not_ongoing.append(f"{text}, ended before")
    return placement
