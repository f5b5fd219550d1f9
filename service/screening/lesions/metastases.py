"""Prostate metastases for every criterion that reads them: metastasis Conditions (and MII
distant-metastasis Observations) of this prostate cancer with their site, lesion-level findings,
spinal sites; other primaries' metastases (mCODE related-primary link) set apart."""

from __future__ import annotations

from dataclasses import dataclass

from service.screening.bodysites import (
    BONE,
    Site,
    classify,
    condition_site,
    is_metastasis_condition,
    other_primary,
    unknown_site,
)
from service.screening.context import Context, once_per_screen
from service.screening.facts import ClinicalFact

_ACTIVE_OR_UNSET = {None, "active", "recurrence", "relapse"}


def site_of(ctx: Context, fact: ClinicalFact) -> Site:
    """The site of a finding or a metastasis Condition."""
    if fact.resource_type == "Condition":
        return condition_site(ctx, fact)
    return finding_site(ctx, fact)


def prostate_findings(ctx: Context) -> list[ClinicalFact]:
    """Lesion-level findings (any date, usable status) not about another cancer (focus)."""
    return [
        f
        for f in ctx.facts.observations_of("imaging-lesion")
        if f.status in ctx.params.observation_statuses_used and other_primary(ctx, f) is None
    ]


def finding_site(ctx: Context, fact: ClinicalFact) -> Site:
    """Where a lesion-level finding is (unknown location when nothing classifies its site)."""
    body_site = fact.resource.get("bodySite")
    return classify(ctx, body_site) or unknown_site(body_site)


@dataclass(frozen=True)
class Metastases:
    """Active (or unstated) metastasis Conditions of this prostate cancer, with their site, and
    the ones the mCODE related-primary link gives to another cancer (criteria.md §3)."""

    sites: list[tuple[ClinicalFact, Site]]
    other_primary: list[str]  # 'X is a metastasis of Y, not of the prostate cancer'


@once_per_screen
def find_metastases(ctx: Context) -> Metastases:
    """The prostate metastases, worked out once per screen (progression, spinal-lesion and the
    strata read them)."""
    found = Metastases([], [])
    records = ctx.facts.conditions + [
        f
        for f in ctx.facts.observations_of("distant-metastasis-site")
        if f.status in ctx.params.observation_statuses_used
    ]
    for fact in sorted(records, key=lambda f: f.evidence.order_key):  # whatever the source's order
        if fact.resource_type == "Condition" and fact.status not in _ACTIVE_OR_UNSET:
            continue
        if not is_metastasis_condition(ctx, fact):
            continue
        other = other_primary(ctx, fact)
        if other is not None:
            found.other_primary.append(
                f"{fact.label} is a metastasis of {other.label}, not of the prostate cancer"
            )
            continue
        found.sites.append((fact, condition_site(ctx, fact)))
    return found


def prostate_metastases(ctx: Context) -> list[tuple[ClinicalFact, Site]]:
    """Active (or unstated) metastasis Conditions of this prostate cancer, with their site."""
    return find_metastases(ctx).sites


def spinal_metastasis_sites(ctx: Context) -> list[tuple[ClinicalFact, Site]]:
    """Spinal (vertebral) prostate metastases: active metastasis Conditions at a spinal site
    (any date), and lesion-level findings at a spinal site in the imaging window (any status)."""
    found = [(f, s) for f, s in prostate_metastases(ctx) if s.spinal]
    days = ctx.params.imaging_window_days
    for fact in prostate_findings(ctx):
        if ctx.in_window(fact.day, days):
            site = finding_site(ctx, fact)
            if site.spinal:
                found.append((fact, site))
    return found


def bone_metastases_without_site(ctx: Context) -> list[ClinicalFact]:
    """Bone metastases recorded without a bone named (criteria.md §3 spinal-lesion: then spinal
    involvement is not known, never 'no spinal metastasis')."""
    return [
        fact
        for fact, site in prostate_metastases(ctx)
        if site.klass == BONE and not site.spinal and not fact.resource.get("bodySite")
    ]
