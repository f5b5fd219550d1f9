"""performance-status: the most recent ECOG/WHO score, Karnofsky converted (criteria.md §3)."""

from __future__ import annotations

from typing import Any

from service.mapping.model import Mappings
from service.screening.context import Context, most_recent_first
from service.screening.criterion import criterion
from service.screening.decision import Decision, Kind, Result
from service.screening.facts import ClinicalFact
from service.screening.nearmiss import near_miss_note

# Karnofsky bands to ECOG (criteria.md §3): 100-90 -> 0, 80-70 -> 1, 60-50 -> 2, 40-30 -> 3,
# 20-10 -> 4, 0 -> 5. A score between bands (85) may mean either neighbour.
_KARNOFSKY_BANDS = ((90, 100, 0), (70, 80, 1), (50, 60, 2), (30, 40, 3), (10, 20, 4), (0, 0, 5))


def karnofsky_to_ecog(score: int) -> set[int]:
    """The ECOG grades a Karnofsky score can mean (two when it lies between bands)."""
    exact = {ecog for low, high, ecog in _KARNOFSKY_BANDS if low <= score <= high}
    if exact:
        return exact
    return {ecog for low, high, ecog in _KARNOFSKY_BANDS if low - 10 < score < high + 10}


def _integer(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def _ecog_from_answer(concept: Any, mappings: Mappings) -> int | None:
    for grade in range(6):
        if mappings.vs(f"ecog-{grade}").matches(concept):
            return grade
    return None


def _score(holder: dict[str, Any], mappings: Mappings) -> int | None:
    for key in ("valueInteger", "valueString"):
        if key in holder:
            return _integer(holder[key])
    if isinstance(holder.get("valueQuantity"), dict):
        return _integer(holder["valueQuantity"].get("value"))
    if "valueCodeableConcept" in holder:
        return _ecog_from_answer(holder["valueCodeableConcept"], mappings)
    return None


def read_grades(fact: ClinicalFact, mappings: Mappings) -> tuple[set[int], str] | None:
    """(possible ECOG grades, how it was read) or None when the observation holds no score."""
    resource = fact.resource
    if fact.has("karnofsky"):
        score = _score(resource, mappings)
        if score is None or not 0 <= score <= 100:
            return None
        grades = karnofsky_to_ecog(score)
        shown = "/".join(str(g) for g in sorted(grades))
        return grades, f"Karnofsky {score} (converted to ECOG {shown})"
    score = _score(resource, mappings)
    if score is None:  # MII style: the grade sits in a component
        for component in resource.get("component") or []:
            if mappings.vs("ecog").matches(component.get("code")):
                score = _score(component, mappings)
                if score is not None:
                    break
    if score is None or not 0 <= score <= 5:
        return None
    return {score}, f"ECOG {score}"


@criterion("performance-status", Kind.INCLUSION, reads={"ecog", "karnofsky"})
def performance_status(ctx: Context) -> Decision:
    days = ctx.params.performance_window_days
    scores = ctx.facts.observations_of("ecog") + ctx.facts.observations_of("karnofsky")
    skipped: list[str] = []
    last_outside: ClinicalFact | None = None
    for fact in most_recent_first(scores):
        if fact.status not in ctx.params.observation_statuses_used:
            skipped.append(f"a {fact.status} score on {fact.day} was not used")
            continue
        if not ctx.in_window(fact.day, days):
            last_outside = last_outside or fact
            continue
        read = read_grades(fact, ctx.mappings)
        if read is None:
            skipped.append(f"a score on {fact.day} has no readable value")
            continue
        grades, shown = read
        notes = f" Also seen: {'; '.join(skipped)}." if skipped else ""
        head = f"{shown} on {fact.day} (most recent within {days} days)"
        if max(grades) <= 2:
            return Decision(Result.MET, f"{head}: WHO 0-2.{notes}", (fact.evidence,))
        if min(grades) >= 3:
            return Decision(Result.NOT_MET, f"{head}: above WHO 2.{notes}", (fact.evidence,))
        return Decision(
            Result.UNKNOWN,
            f"{head}: could be either side of WHO 2.{notes} Chase: a WHO/ECOG score (the "
            "treating oncologist).",
            (fact.evidence,),
        )
    text = f"No ECOG/WHO or Karnofsky score within {days} days before {ctx.as_of}"
    if last_outside is not None:
        read = read_grades(last_outside, ctx.mappings)
        shown = f", {read[1]}," if read else ""
        day = last_outside.day
        when = f"on {day} ({(ctx.as_of - day.earliest).days} days before)" if day else "undated"
        text += f"; the last one{shown} was {when}"
    notes = f" Also seen: {'; '.join(skipped)}." if skipped else ""
    notes += near_miss_note(ctx, "performance-status", days)
    evidence = (last_outside.evidence,) if last_outside else ()
    chase = f" Chase: a WHO/ECOG score from the last {days} days (the treating oncologist's notes)."
    return Decision(Result.UNKNOWN, text + "." + notes + chase, evidence)
