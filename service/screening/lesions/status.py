"""Representations 3 and 4: a disease status "worsened" gives [1, open] (not when it rests on
laboratory results only); new metastasis Conditions, counted by organ or node region, give
[certain sites, open] (an onset in the window is certain, a recordedDate alone possible)."""

from __future__ import annotations

from datetime import date

from service.fhir.dates import FhirDay, parse_fhir_day
from service.screening.bodysites import (
    CLASS_WORDS,
    INTRACRANIAL,
    POSSIBLY_INTRACRANIAL,
    REGION_WEIGHT,
    UNKNOWN,
    is_unconfirmed,
    verification,
)
from service.screening.context import Context, join_names
from service.screening.decision import Evidence
from service.screening.facts import ClinicalFact
from service.screening.imaging import lab_only_status
from service.screening.lesions.metastases import find_metastases
from service.screening.lesions.model import (
    CONDITIONS,
    DISEASE_STATUS,
    STATUS_AND_CONDITIONS,
    Progression,
    Source,
)


def from_status_and_conditions(
    ctx: Context, progression: Progression, statuses: list[ClinicalFact], days: int
) -> Source | None:
    status = _from_disease_status(ctx, progression, statuses)
    conditions = _from_conditions(ctx, progression, days)
    if status is None and conditions is None:
        return None
    if status is None or conditions is None:
        return status or conditions
    days_known = [d for d in (status.progression_day, conditions.progression_day) if d]
    return Source(
        STATUS_AND_CONDITIONS, max(status.low, conditions.low), None,
        max((s.day for s in (status, conditions) if s.day), key=lambda d: d.earliest, default=None),
        f"{status.text} and {conditions.text}", status.evidence + conditions.evidence,
        progression_day=min(days_known, default=None),
    )  # fmt: skip


def _from_disease_status(
    ctx: Context, progression: Progression, statuses: list[ClinicalFact]
) -> Source | None:
    worsened: list[ClinicalFact] = []
    for fact in statuses:
        value = fact.resource.get("valueCodeableConcept")
        if value is None:
            progression.notes.append(
                f"a disease-status observation on {fact.day} has no value (progression not "
                "documented by it)"
            )
            continue
        if not ctx.mappings.vs("disease-worsened").matches(value):
            continue
        if lab_only_status(ctx, fact.resource):
            progression.notes.append(
                f"a 'worsened' disease status on {fact.day} rests on laboratory results only "
                "(a PSA rise), not imaging: not counted"
            )
            continue
        worsened.append(fact)
    if not worsened:
        return None
    first = min(worsened, key=lambda f: f.day.earliest if f.day else date.max)
    assert first.day is not None
    return Source(
        DISEASE_STATUS, 1, None, first.day,
        f"disease status 'worsened' on {first.day} (no lesion count)",
        [f.evidence for f in worsened], progression_day=first.day.earliest,
    )  # fmt: skip


def _from_conditions(ctx: Context, progression: Progression, days: int) -> Source | None:
    certain_regions: dict[str, str] = {}
    possible_regions: dict[str, str] = {}
    unconfirmed_regions: dict[str, str] = {}
    onsets: list[date] = []
    evidence: list[Evidence] = []
    metastases = find_metastases(ctx)
    progression.other_primary.extend(metastases.other_primary)
    for fact, site in metastases.sites:
        onset = _onset(fact)
        recorded = parse_fhir_day(fact.resource.get("recordedDate"))
        onset_in = onset is not None and ctx.in_window(onset, days)
        recorded_in = recorded is not None and ctx.in_window(recorded, days)
        if not (onset_in or recorded_in):
            continue
        evidence.append(fact.evidence)
        name = f"{fact.label} ({CLASS_WORDS[site.klass]})"
        if is_unconfirmed(fact):
            progression.unconfirmed.append(f"{fact.label}, recorded as {verification(fact)}")
            if onset_in and site.extracranial:
                unconfirmed_regions.setdefault(site.region, name)
            elif site.klass in (INTRACRANIAL, POSSIBLY_INTRACRANIAL):
                # it never decides, but it may be intracranial: oligoprogression is not `met`
                progression.possibly_intracranial.append(
                    f"{fact.label}, recorded as {verification(fact)}"
                )
            continue
        if site.klass == INTRACRANIAL:
            if onset_in:
                progression.intracranial.append(
                    f"new intracranial metastasis: {fact.label} (onset {onset})"
                )
            else:
                progression.possibly_intracranial.append(f"{fact.label}, recorded {recorded}")
            continue
        if site.klass == POSSIBLY_INTRACRANIAL:
            progression.possibly_intracranial.append(f"{fact.label} ({CLASS_WORDS[site.klass]})")
        if onset_in and site.klass not in (UNKNOWN, POSSIBLY_INTRACRANIAL):
            assert onset is not None
            certain_regions.setdefault(site.region, name)
            onsets.append(onset.earliest)
        else:
            why = (
                "site not recorded"
                if site.klass == UNKNOWN
                else f"only its recorded date ({recorded}) is in the window, onset {onset or 'not recorded'}"
            )
            possible_regions.setdefault(site.region, f"{name}: {why}")
    if not evidence:
        return None
    low = sum(REGION_WEIGHT.get(region, 1) for region in certain_regions)
    extra = {r: n for r, n in unconfirmed_regions.items() if r not in certain_regions}
    progression.unconfirmed_sites = sum(REGION_WEIGHT.get(r, 1) for r in extra)
    progression.possible.extend(
        f"metastasis {text}" for r, text in possible_regions.items() if r not in certain_regions
    )
    sites = join_names(sorted(certain_regions.values())) or "no site with an onset in the window"
    first = min(onsets, default=None)
    latest_day = max(
        (d for f in ctx.facts.conditions if f.evidence in evidence and (d := f.day) is not None),
        key=lambda d: d.earliest,
        default=None,
    )
    return Source(
        CONDITIONS, low, None, latest_day,
        f"at least {low} new metastatic site{'s' if low != 1 else ''} in the window ({sites})",
        evidence, progression_day=first,
    )  # fmt: skip


def _onset(fact: ClinicalFact) -> FhirDay | None:
    """When the metastasis began: a Condition's onset; an MII distant-metastasis Observation's
    effective date (the date it was diagnosed, codes.md §4d-g)."""
    if fact.resource_type == "Observation":
        return fact.day
    resource = fact.resource
    return parse_fhir_day(resource.get("onsetDateTime")) or parse_fhir_day(
        (resource.get("onsetPeriod") or {}).get("start")
    )
