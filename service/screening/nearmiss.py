"""Near misses (issue 11 item 10): records that look like data a criterion needs, unmapped.

A laboratory's local code for "Testosteron totaal", a score displayed "ECOG", a medication text
"Leuprolid 22,5 mg depot": no mapping matches them, so no rule may use them (a near miss never
decides anything), but when the criterion is `unknown` for want of that data the reason names
them, so a coordinator can look and a site can map the code. The patterns are data
(mappings/near-misses.yaml), per concept and language.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from service.fhir.dates import FhirDay, parse_fhir_day
from service.fhir.record import Resource, versioned_reference
from service.mapping.model import Mappings, NearMisses, codings_of, texts_of
from service.screening.context import Context, join_names
from service.screening.decision import Evidence
from service.screening.facts import NearMiss

BLINDED = "blinded-drug"
MAX_NAMED = 3  # per criterion: the most recent ones


def near_misses_of(
    mappings: Mappings, resource: Resource, as_of: date, concept: Any = None
) -> list[NearMiss]:
    """The near misses one unmapped Observation (or unrecognised medication record) is."""
    if resource.get("status") == "entered-in-error":
        return []
    kind = "observation" if resource.get("resourceType") == "Observation" else "medication"
    code = resource.get("code") if concept is None else concept
    texts = texts_of(code)
    if not texts:
        return []
    found = _matches(mappings.near_misses, kind, tuple(texts))
    if not found:
        return []
    day = _day_of(resource)
    if day is not None and day.earliest > as_of:
        return []
    local = next((c for _s, c in codings_of(code)), None)
    status = resource.get("status") if isinstance(resource.get("status"), str) else None
    reference = versioned_reference(resource)
    text = texts[0].strip()
    return [
        NearMiss(
            name,
            str(resource.get("resourceType")),
            Evidence(reference, f"{text} (unmapped), {day}" if day else f"{text} (unmapped)"),
            text,
            local,
            day,
            status,
        )
        for name in found
    ]


# values keep their table: while an entry lives its table's id cannot be reused by another
_CACHE: dict[tuple[int, str, tuple[str, ...]], tuple[NearMisses, tuple[str, ...]]] = {}
CACHE_SIZE = 4096


def _matches(table: NearMisses, kind: str, texts: tuple[str, ...]) -> tuple[str, ...]:
    """The near-miss concepts some words are, remembered per distinct wording: a chart repeats
    the same few codes thousands of times (6144 Observations in 20 Synthea patients), and the
    patterns are long alternations. Bounded: cleared when full."""
    key = (id(table), kind, texts)
    cached = _CACHE.get(key)
    if cached is not None and cached[0] is table:
        return cached[1]
    if len(_CACHE) >= CACHE_SIZE:
        _CACHE.clear()
    found = _match(table, kind, " ".join(texts).casefold())
    _CACHE[key] = (table, found)
    return found


def _match(table: NearMisses, kind: str, words: str) -> tuple[str, ...]:
    found = []
    for entry in table.concepts:
        if entry.kind != kind or entry.pattern is None or not entry.pattern.search(words):
            continue
        if entry.exclude is not None and entry.exclude.search(words):
            continue
        found.append(entry.name)
    if kind == "medication" and table.blinded is not None and table.blinded.search(words):
        found.append(BLINDED)
    return tuple(found)


def _day_of(resource: Resource) -> FhirDay | None:
    for key in ("effectiveDateTime", "issued", "authoredOn", "dateAsserted"):
        day = parse_fhir_day(resource.get(key))
        if day is not None:
            return day
    for key in ("effectivePeriod",):
        period = resource.get(key)
        if isinstance(period, dict):
            day = parse_fhir_day(period.get("start"))
            if day is not None:
                return day
    return None


def near_misses_for(ctx: Context, concept: str, window_days: int | None = None) -> list[NearMiss]:
    """The near misses of one concept (within the window when given), most recent first."""
    found = [
        m
        for m in ctx.facts.near_misses
        if m.concept == concept and (window_days is None or ctx.in_window(m.day, window_days))
    ]
    return sorted(
        found,
        key=lambda m: (m.day.earliest if m.day else date.min, m.evidence.order_key),
        reverse=True,
    )


def near_miss_note(ctx: Context, criterion_id: str, window_days: int | None = None) -> str:
    """' Near miss: an unmapped result 'Testosteron totaal' (local code LAB123) on 2026-11-02
    may be total testosterone: map its code in mappings/ to use it.' (or '')."""
    parts = []
    for entry in ctx.mappings.near_misses.concepts:
        if criterion_id not in entry.criteria:
            continue
        for miss in near_misses_for(ctx, entry.name, window_days)[:MAX_NAMED]:
            noun = "result" if miss.resource_type == "Observation" else "medication record"
            code = f" (local code {miss.local_code})" if miss.local_code else ""
            when = f" on {miss.day}" if miss.day else ""
            parts.append(f"an unmapped {noun} '{miss.text}'{code}{when} may be {entry.what}")
    if not parts:
        return ""
    return (
        f" Near miss, not used: {join_names(parts)}; map its code (or name) in mappings/ to use it."
    )
