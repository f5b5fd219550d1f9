"""histology and excluded-histology: read from the prostate cancer Condition(s) (criteria.md §3).

Histology comes from the Condition's own codings (SNOMED disorders, ICD-O-3 morphology), from
the mCODE histology-morphology-behavior extension on it, and from histology Observations
(LOINC 59847-4) about it: their `focus` names the Condition, or, without a focus, their
bodySite is the prostate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from service.fhir.record import type_and_id
from service.screening.context import Context, join_names
from service.screening.facts import ClinicalFact
from service.screening.result import Decision, Evidence, Result

MCODE_HISTOLOGY_EXTENSION = (
    "http://hl7.org/fhir/us/mcode/StructureDefinition/mcode-histology-morphology-behavior"
)
ADENO, EXCLUDED, OTHER = "adenocarcinoma", "excluded", "other"
_CATEGORY_CONCEPTS = (
    (ADENO, "histology-adenocarcinoma"),
    (EXCLUDED, "histology-excluded"),
    (OTHER, "prostate-other-histology"),
)


@dataclass
class HistologyFinding:
    prostate: list[ClinicalFact] = field(default_factory=list)
    categories: dict[str, list[str]] = field(default_factory=dict)  # category -> where seen
    evidence: list[Evidence] = field(default_factory=list)
    traps: list[ClinicalFact] = field(default_factory=list)


def _categories_of(ctx: Context, concept: Any) -> list[str]:
    return [cat for cat, name in _CATEGORY_CONCEPTS if ctx.mappings.vs(name).matches(concept)]


def find_histology(ctx: Context) -> HistologyFinding:
    if "histology" in ctx.cache:
        cached: HistologyFinding = ctx.cache["histology"]
        return cached
    finding = HistologyFinding()
    for fact in ctx.facts.conditions:
        if fact.has("prostate-cancer") or fact.has("prostate-other-histology"):
            finding.prostate.append(fact)
            finding.evidence.append(fact.evidence)
        elif fact.has("not-prostate-primary"):
            finding.traps.append(fact)
    prostate_ids = {type_and_id(f.evidence.reference) for f in finding.prostate}

    def record(category: str, where: str) -> None:
        finding.categories.setdefault(category, []).append(where)

    for fact in finding.prostate:
        for category in _categories_of(ctx, fact.resource.get("code")):
            record(category, f"{fact.label} ({fact.evidence.reference})")
        for extension in fact.resource.get("extension") or []:
            if extension.get("url") == MCODE_HISTOLOGY_EXTENSION:
                for category in _categories_of(ctx, extension.get("valueCodeableConcept")):
                    record(category, f"mCODE histology extension on {fact.evidence.reference}")
    for obs in ctx.facts.observations_of("histology-observation"):
        focus = [type_and_id(f.get("reference", "")) for f in obs.resource.get("focus") or []]
        about_prostate = (
            any(f in prostate_ids for f in focus)
            if focus
            else bool(finding.prostate)
            and ctx.mappings.vs("site-local").matches(obs.resource.get("bodySite"))
        )
        if not about_prostate:
            continue
        categories = _categories_of(ctx, obs.resource.get("valueCodeableConcept"))
        for category in categories:
            record(category, f"histology observation {obs.evidence.reference}")
        if categories:
            finding.evidence.append(obs.evidence)
    ctx.cache["histology"] = finding
    return finding


def histology(ctx: Context) -> Decision:
    finding = find_histology(ctx)
    evidence = tuple(finding.evidence)
    if not finding.prostate:
        reason = "No prostate cancer diagnosis recorded."
        if finding.traps:
            names = join_names([f"{t.label} ({t.evidence.reference})" for t in finding.traps])
            reason += f" {names} is a malignancy involving the prostate from another primary, not prostate cancer."
            evidence = tuple(t.evidence for t in finding.traps)
        return Decision(Result.NOT_MET, reason, evidence)
    seen = finding.categories
    if ADENO in seen:
        text = f"Prostate adenocarcinoma: {join_names(seen[ADENO])}."
        if EXCLUDED in seen:
            text += f" Also an excluded histology: {join_names(seen[EXCLUDED])} (see excluded-histology)."
        return Decision(Result.MET, text, evidence)
    if EXCLUDED in seen:
        text = (
            f"Histology is ductal or small-cell/neuroendocrine only: {join_names(seen[EXCLUDED])}; "
            "not acinar adenocarcinoma."
        )
        return Decision(Result.NOT_MET, text, evidence)
    names = join_names([f"{f.label} ({f.evidence.reference})" for f in finding.prostate])
    if OTHER in seen:
        text = f"Prostate cancer of another histology ({join_names(seen[OTHER])}): not adenocarcinoma; review."
        return Decision(Result.UNKNOWN, text, evidence)
    return Decision(
        Result.UNKNOWN,
        f"Prostate cancer recorded without histology: {names}; review the pathology.",
        evidence,
    )


def excluded_histology(ctx: Context) -> Decision:
    finding = find_histology(ctx)
    seen = finding.categories
    if EXCLUDED in seen:
        text = f"Excluded prostate histology recorded: {join_names(seen[EXCLUDED])}."
        return Decision(Result.MET, text, tuple(finding.evidence))
    if not finding.prostate:
        return Decision(
            Result.NOT_MET, "No prostate cancer diagnosis, so no excluded histology recorded."
        )
    return Decision(
        Result.NOT_MET,
        "No ductal or small-cell/neuroendocrine prostate histology recorded.",
        tuple(finding.evidence),
    )
