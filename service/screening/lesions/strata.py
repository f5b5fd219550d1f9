"""The strata of criteria.md §6 (medcare-2): metastases (1 or >1) and localization."""

from __future__ import annotations

from service.screening.bodysites import BONE, INTRACRANIAL, POSSIBLY_INTRACRANIAL, is_unconfirmed
from service.screening.context import Context, most_recent_first
from service.screening.lesions.metastases import (
    finding_site,
    prostate_findings,
    prostate_metastases,
)
from service.screening.lesions.progression import find_progression


def metastases_stratum(ctx: Context) -> str | None:
    """'1' from an exact count of 1, '>1' from a count or lower bound of 2 or more."""
    progression = find_progression(ctx)
    if not progression.sources:
        return None
    if progression.conflict:
        # sources disagree on the side of the limit, but if each has 2 or more it is '>1'
        return ">1" if min(s.low for s in progression.conflict) >= 2 else None
    if progression.exact == 1:
        return "1"
    if progression.low >= 2:
        return ">1"
    return None


_DECIDES_M1BC = {BONE, "visceral", INTRACRANIAL, POSSIBLY_INTRACRANIAL}
_NODAL_OR_LOCAL = {"local", "regional-node", "nonregional-node", "node"}


def recorded_site_classes(ctx: Context) -> set[str]:
    """Location classes of every recorded prostate metastatic site and lesion location."""
    classes = {site.klass for fact, site in prostate_metastases(ctx) if not is_unconfirmed(fact)}
    vs = ctx.mappings.vs
    for fact in prostate_findings(ctx):
        value = fact.resource.get("valueCodeableConcept")
        if any(
            vs(f"lesion-{v}").matches(value) for v in ("new", "progressive", "stable", "regressing")
        ):
            classes.add(finding_site(ctx, fact).klass)
    return classes


def localization(ctx: Context) -> str | None:
    """criteria.md §6: any bone or visceral site makes M1b-M1c; only local, nodal and M1a sites
    make local-N-M1a; a bladder/rectum or pelvis site, or one of unknown location, leaves it
    undecided unless other sites decide; with nothing decided, the most recent M category."""
    classes = recorded_site_classes(ctx)
    if classes & _DECIDES_M1BC:
        return "M1b-M1c"
    if classes & _NODAL_OR_LOCAL and not classes - _NODAL_OR_LOCAL:
        return "local-N-M1a"
    # nothing recorded, or only sites that do not decide (bladder/rectum, pelvis, unknown):
    # the most recent M category, where there is one, says more than they do
    return _from_m_category(ctx)


def _from_m_category(ctx: Context) -> str | None:
    vs = ctx.mappings.vs
    for fact in most_recent_first(ctx.facts.observations_of("m-category")):
        if fact.status not in ctx.params.observation_statuses_used:
            continue
        value = fact.resource.get("valueCodeableConcept")
        if vs("m-category-m1a").matches(value):
            return "local-N-M1a"
        if vs("m-category-m1bc").matches(value):
            return "M1b-M1c"
        return None  # the most recent M category decides, or nothing does
    return None
