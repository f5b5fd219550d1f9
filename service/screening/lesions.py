"""Progressive lesions from the four representations of criteria.md §4, in order of precedence.

1. a lesion-count observation (exact count; intracranial count in a component);
2. lesion-level findings (new/progressive ones on the most recent imaging date give a count);
3. a disease-status observation "worsened" (progression documented, count unknown);
4. new metastasis Conditions (each distinct site counts at least one: a lower bound).
Only evidence dated within the imaging window (42 days before as_of) is used.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from service.fhir.dates import FhirDay
from service.mapping.model import codings_of, normalize_code
from service.screening.concepts import SITE_CONCEPTS
from service.screening.context import Context, fmt_number, most_recent_first
from service.screening.facts import ClinicalFact
from service.screening.result import Evidence

COUNT, FINDINGS, DISEASE_STATUS, CONDITIONS = "count", "findings", "disease-status", "conditions"
REPRESENTATION_NAMES = {
    COUNT: "lesion-count observation",
    FINDINGS: "lesion-level imaging findings",
    DISEASE_STATUS: "disease-status observation",
    CONDITIONS: "new metastasis conditions",
}
NODE_SITES = ("site-regional-node", "site-nonregional-node")
_ACTIVE_OR_UNSET = {None, "active", "recurrence", "relapse"}


@dataclass
class Progression:
    """What the highest-precedence representation in the window says."""

    representation: str | None = None
    exact: int | None = None
    lower_bound: int | None = None
    intracranial: int = 0
    unclear_site: int = 0
    day: FhirDay | None = None
    evidence: list[Evidence] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    latest_outside_window: FhirDay | None = None

    @property
    def documented(self) -> bool:
        """Progression is shown (count > 0, a lower bound, or a 'worsened' status)."""
        if self.exact is not None:
            return self.exact > 0 or self.intracranial > 0
        return self.representation is not None

    def source(self) -> str:
        name = REPRESENTATION_NAMES.get(self.representation or "", "no evidence")
        return f"{name} on {self.day}" if self.day else name


def site_class(ctx: Context, concept: Any) -> str | None:
    for name in SITE_CONCEPTS:
        if ctx.mappings.vs(name).matches(concept):
            return name
    return None


def find_progression(ctx: Context) -> Progression:
    if "progression" in ctx.cache:
        cached: Progression = ctx.cache["progression"]
        return cached
    days = ctx.params.imaging_window_days
    facts = ctx.facts
    candidates = (
        facts.observations_of("lesion-count")
        + facts.observations_of("imaging-lesion")
        + facts.observations_of("disease-status")
    )
    usable = [f for f in candidates if f.status in ctx.params.observation_statuses_used]
    in_window = [f for f in usable if ctx.in_window(f.day, days)]
    progression = (
        _from_counts(ctx, [f for f in in_window if f.has("lesion-count")])
        or _from_findings(ctx, [f for f in in_window if f.has("imaging-lesion")])
        or _from_disease_status(ctx, [f for f in in_window if f.has("disease-status")])
        or _from_conditions(ctx, days)
        or Progression()
    )
    if progression.representation is None:
        older = [f.day for f in usable if f.day is not None and not ctx.in_window(f.day, days)]
        older += [
            f.day for f in facts.conditions
            if f.day is not None and site_class(ctx, f.resource.get("code")) is not None
            and not ctx.in_window(f.day, days)
        ]  # fmt: skip
        progression.latest_outside_window = max(older, default=None)
    ctx.cache["progression"] = progression
    return progression


def _from_counts(ctx: Context, counts: list[ClinicalFact]) -> Progression | None:
    for fact in most_recent_first(counts):
        resource = fact.resource
        exact, lower = _count_value(resource)
        if exact is None and lower is None:
            continue
        intracranial = 0
        for component in resource.get("component") or []:
            if ctx.mappings.vs("lesion-count-intracranial").matches(component.get("code")):
                intracranial += _count_value(component)[0] or 0
        return Progression(COUNT, exact, lower, intracranial, 0, fact.day, [fact.evidence])
    return None


def _count_value(holder: dict[str, Any]) -> tuple[int | None, int | None]:
    """(exact, lower bound) from valueInteger, or valueQuantity with an optional comparator."""
    if isinstance(holder.get("valueInteger"), int):
        return holder["valueInteger"], None
    quantity = holder.get("valueQuantity")
    if isinstance(quantity, dict) and isinstance(quantity.get("value"), int | float):
        value = int(quantity["value"])
        comparator = quantity.get("comparator")
        if comparator == ">=":
            return None, value
        if comparator == ">":
            return None, value + 1
        if comparator is None:
            return value, None
    return None, None


def _size_mm(ctx: Context, finding: dict[str, Any]) -> float | None:
    for component in finding.get("component") or []:
        if ctx.mappings.vs("lesion-size").matches(component.get("code")):
            quantity = component.get("valueQuantity") or {}
            value, unit = (
                quantity.get("value"),
                (quantity.get("code") or quantity.get("unit") or ""),
            )
            if isinstance(value, int | float):
                factor = {"mm": 1.0, "cm": 10.0}.get(str(unit).casefold())
                if factor is not None:
                    return float(value) * factor
    return None


def _from_findings(ctx: Context, findings: list[ClinicalFact]) -> Progression | None:
    if not findings:
        return None
    latest_day = max(f.day.earliest for f in findings if f.day is not None)
    on_latest = [f for f in findings if f.day is not None and f.day.earliest == latest_day]
    progression = Progression(FINDINGS, exact=0, day=on_latest[0].day)
    params = ctx.params
    for fact in sorted(on_latest, key=lambda f: f.evidence.reference):
        value = fact.resource.get("valueCodeableConcept")
        vs = ctx.mappings.vs
        if vs("lesion-stable").matches(value) or vs("lesion-regressing").matches(value):
            continue
        if not (vs("lesion-new").matches(value) or vs("lesion-progressive").matches(value)):
            progression.notes.append(f"{fact.evidence.reference} has no recognised value")
            continue
        site = site_class(ctx, fact.resource.get("bodySite"))
        size = _size_mm(ctx, fact.resource)
        minimum = (
            params.min_node_short_axis_mm if site in NODE_SITES
            else params.min_visceral_diameter_mm if site == "site-visceral"
            else None
        )  # fmt: skip
        if minimum is not None and size is not None and size <= minimum:
            progression.notes.append(
                f"{fact.evidence.reference} ({fmt_number(size)} mm) is not above {fmt_number(minimum)} mm"
            )
            continue
        if minimum is not None and size is None:
            progression.notes.append(f"{fact.evidence.reference} has no size and counts")
        progression.evidence.append(fact.evidence)
        if site == "site-intracranial":
            progression.intracranial += 1
        elif site == "site-unclear-cns":
            progression.unclear_site += 1
        else:
            progression.exact = (progression.exact or 0) + 1
    if not progression.evidence:
        progression.evidence = [f.evidence for f in on_latest]
    return progression


def _from_disease_status(ctx: Context, statuses: list[ClinicalFact]) -> Progression | None:
    for fact in most_recent_first(statuses):
        if ctx.mappings.vs("disease-worsened").matches(fact.resource.get("valueCodeableConcept")):
            return Progression(DISEASE_STATUS, day=fact.day, evidence=[fact.evidence])
        return None  # the most recent status does not say worsened
    return None


def _from_conditions(ctx: Context, days: int) -> Progression | None:
    sites: dict[str, str] = {}
    progression = Progression(CONDITIONS, lower_bound=0)
    days_seen: list[FhirDay] = []
    for fact in sorted(ctx.facts.conditions, key=lambda f: f.evidence.reference):
        code = fact.resource.get("code")
        site = site_class(ctx, code)
        if site is None or fact.status not in _ACTIVE_OR_UNSET or not ctx.in_window(fact.day, days):
            continue
        assert fact.day is not None
        key = _site_key(code)
        progression.evidence.append(fact.evidence)
        days_seen.append(fact.day)
        if site == "site-intracranial":
            progression.intracranial += 1
        elif site == "site-unclear-cns":
            progression.unclear_site += 1
        else:
            sites.setdefault(key, fact.label)
    if not progression.evidence:
        return None
    progression.day = max(days_seen, key=lambda d: d.earliest)
    progression.lower_bound = len(sites)
    return progression


def _site_key(concept: Any) -> str:
    for system, code in codings_of(concept):
        return f"{system}|{normalize_code(code)}"
    return "?"


def recorded_site_classes(ctx: Context) -> set[str]:
    """Location classes of every recorded metastatic site (strata: localization)."""
    classes = set()
    for fact in ctx.facts.conditions:
        site = site_class(ctx, fact.resource.get("code"))
        if site and fact.status in _ACTIVE_OR_UNSET:
            classes.add(site)
    for fact in ctx.facts.observations_of("imaging-lesion"):
        value = fact.resource.get("valueCodeableConcept")
        vs = ctx.mappings.vs
        if vs("lesion-new").matches(value) or vs("lesion-progressive").matches(value):
            site = site_class(ctx, fact.resource.get("bodySite"))
            if site:
                classes.add(site)
    return classes
