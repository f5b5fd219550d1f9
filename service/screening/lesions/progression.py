"""The window: the four representations of criteria.md §4 read, then weighed into one range.

The primary evidence is the first present in the order count, findings, then disease status
and new metastasis Conditions together (low is the larger of the two). No representation hides
another: sources on different sides of the limit are a conflict."""

from __future__ import annotations

from datetime import date, timedelta

from service.fhir.dates import FhirDay
from service.screening.bodysites import is_prostate_metastasis
from service.screening.context import Context, once_per_screen
from service.screening.facts import ClinicalFact
from service.screening.imaging import castration_at
from service.screening.lesions.counts import from_counts
from service.screening.lesions.findings import from_findings
from service.screening.lesions.model import Progression
from service.screening.lesions.status import from_status_and_conditions

# Evidence older than the window but at most this old is named in the reason as set aside.
RECENT_OUTSIDE_WINDOW_DAYS = 365


@once_per_screen
def find_progression(ctx: Context) -> Progression:
    """The count range in the window, worked out once per screen (three criteria and the
    strata read it)."""
    days = ctx.params.imaging_window_days
    facts = ctx.facts
    candidates = (
        facts.observations_of("lesion-count")
        + facts.observations_of("imaging-lesion")
        + facts.observations_of("disease-status")
    )
    usable = [f for f in candidates if f.status in ctx.params.observation_statuses_used]
    in_window = [f for f in usable if ctx.in_window(f.day, days)]
    progression = Progression()
    sources = [
        from_counts(ctx, progression, [f for f in in_window if f.has("lesion-count")]),
        from_findings(ctx, progression, [f for f in in_window if f.has("imaging-lesion")]),
        from_status_and_conditions(
            ctx, progression, [f for f in in_window if f.has("disease-status")], days
        ),
    ]
    progression.sources = [s for s in sources if s is not None]
    _weigh(ctx, progression)
    if not progression.sources:
        _outside_window(ctx, progression, usable, days)
    return progression


def _weigh(ctx: Context, progression: Progression) -> None:
    limit = ctx.params.max_progressive_lesions
    if not progression.sources:
        return
    primary = progression.sources[0]
    progression.representation = primary.kind
    progression.low, progression.high = primary.low, primary.high
    for source in progression.sources:
        progression.evidence.extend(e for e in source.evidence if e not in progression.evidence)
    at_most = [s for s in progression.sources if s.high is not None and s.high <= limit]
    above = [s for s in progression.sources if s.low > limit]
    if at_most and above:
        progression.conflict = at_most + above
    if primary.progression_day is not None:
        progression.day = FhirDay(
            primary.progression_day, primary.progression_day, primary.progression_day.isoformat()
        )
        progression.castration = castration_at(ctx, primary.progression_day)


def _outside_window(
    ctx: Context, progression: Progression, usable: list[ClinicalFact], days: int
) -> None:
    older = [f for f in usable if f.day is not None and not ctx.in_window(f.day, days)]
    older += [
        f for f in ctx.facts.conditions
        if f.day is not None and is_prostate_metastasis(ctx, f) and not ctx.in_window(f.day, days)
        and f.day.earliest <= ctx.as_of
    ]  # fmt: skip
    if not older:
        return
    latest = max(older, key=lambda f: f.day.earliest if f.day else date.min)
    assert latest.day is not None
    if (ctx.as_of - latest.day.earliest).days > RECENT_OUTSIDE_WINDOW_DAYS:
        return  # years-old evidence is history, not "just outside the window" (§7b)
    progression.latest_outside_window = latest.day
    ago = (ctx.as_of - latest.day.earliest).days
    what = latest.label
    if latest.has("lesion-count") and isinstance(latest.resource.get("valueInteger"), int):
        n = latest.resource["valueInteger"]
        what = f"{n} progressive lesion{'s' if n != 1 else ''}"
    progression.outside_window_text = f"{what} on {latest.day}, {ago} days ago"


def valid_until(ctx: Context, day: date) -> date:
    """Imaging stays within the protocol window until this day (criteria.md §7b)."""
    return day + timedelta(days=ctx.params.imaging_window_days)
