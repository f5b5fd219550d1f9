"""histology and excluded-histology: read from the prostate cancer Condition(s) (criteria.md §3).

Histology comes from the Condition's own codings (SNOMED disorders, ICD-O-3 morphology), from
the mCODE histology-morphology-behavior extension on it (ICD-O-3 or SNOMED morphologic
abnormalities, codes.md §3e), and from histology Observations (LOINC 59847-4, mCODE STU4's
31206-6 and 77753-2) about it: their `focus` or mCODE related-condition extension names the
Condition, or, without either, their bodySite is the prostate.

medcare-2: excluded histology is what the listing words: small-cell (alone or mixed) and pure
ductal; neuroendocrine carcinoma NOS, large-cell neuroendocrine carcinoma and mixed acinar-ductal
are `unknown` (the board's call). A diagnosis recorded as unconfirmed, provisional or
differential never decides on its own: each criterion is decided on the confirmed records, and
where the unconfirmed ones would change that, the result is `unknown`, naming them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from service.fhir.record import type_and_id
from service.screening.bodysites import is_unconfirmed, verification
from service.screening.context import Context, join_names, once_per_screen
from service.screening.criterion import criterion
from service.screening.decision import Decision, Evidence, Kind, Result
from service.screening.facts import ClinicalFact

# what both histology criteria read (an unreadable one keeps them from ruling out)
HISTOLOGY_CONCEPTS = frozenset({
    "prostate-cancer", "prostate-other-histology", "histology-adenocarcinoma",
    "histology-excluded", "histology-observation",
})  # fmt: skip

MCODE_HISTOLOGY_EXTENSION = (
    "http://hl7.org/fhir/us/mcode/StructureDefinition/mcode-histology-morphology-behavior"
)
MCODE_RELATED_CONDITION = "http://hl7.org/fhir/us/mcode/StructureDefinition/mcode-related-condition"
ADENO, ACINAR_CELL, SMALL_CELL, DUCTAL = "adenocarcinoma", "acinar-cell", "small-cell", "ductal"
NE_UNCERTAIN, OTHER = "neuroendocrine-uncertain", "other"
PATHOLOGY = "Chase: the pathology report (pathology department or referring urologist)."
ADENO_WORDS = "adenocarcinoma"


@dataclass
class HistologyFinding:
    prostate: list[ClinicalFact] = field(default_factory=list)
    unconfirmed: list[ClinicalFact] = field(default_factory=list)  # prostate ones among them
    categories: dict[str, list[str]] = field(default_factory=dict)  # category -> where seen
    confirmed: dict[str, list[str]] = field(default_factory=dict)  # the same, confirmed only
    evidence: list[Evidence] = field(default_factory=list)
    traps: list[ClinicalFact] = field(default_factory=list)

    @property
    def has_confirmed_prostate(self) -> bool:
        return any(f not in self.unconfirmed for f in self.prostate)


def named_unconfirmed(facts: list[ClinicalFact]) -> str:
    """'ductal adenocarcinoma, recorded as a differential diagnosis (Condition/x)'."""
    return join_names(
        [
            f"{f.label}, recorded as {_article(verification(f))} {verification(f)} diagnosis"
            f"{f.dated}"
            for f in facts
        ]
    )


def _article(word: str | None) -> str:
    return "an" if word and word[0] in "aeiou" else "a"


# The histology value sets, in the order their categories are listed in reasons.
_CATEGORY_SETS = (
    ("histology-adenocarcinoma", ADENO),
    ("histology-acinar-cell", ACINAR_CELL),
    ("histology-ductal", DUCTAL),
    ("histology-excluded", SMALL_CELL),  # excluded and not ductal: small-cell
    ("histology-neuroendocrine-uncertain", NE_UNCERTAIN),
    ("prostate-other-histology", OTHER),
)


def _categories_of(ctx: Context, concept: Any) -> list[str]:
    sets = ctx.mappings.valuesets
    found = [
        category
        for name, category in _CATEGORY_SETS
        if (valueset := sets.get(name)) is not None and valueset.matches(concept)
    ]
    if DUCTAL in found and SMALL_CELL in found:  # an excluded code that is ductal is not small-cell
        found.remove(SMALL_CELL)
    return found


def _about(obs: ClinicalFact) -> list[str]:
    """The Conditions a histology Observation is about (focus, mCODE related-condition)."""
    references = [f.get("reference", "") for f in obs.resource.get("focus") or []]
    for extension in obs.resource.get("extension") or []:
        if isinstance(extension, dict) and extension.get("url") == MCODE_RELATED_CONDITION:
            references.append((extension.get("valueReference") or {}).get("reference", ""))
    return [r for r in (type_and_id(ref) for ref in references if isinstance(ref, str)) if r]


@once_per_screen
def find_histology(ctx: Context) -> HistologyFinding:
    """The prostate cancer diagnoses and their histology, worked out once per screen."""
    finding = HistologyFinding()
    for fact in ctx.facts.conditions:
        if fact.has("prostate-cancer") or fact.has("prostate-other-histology"):
            finding.prostate.append(fact)
            finding.evidence.append(fact.evidence)
            if is_unconfirmed(fact):
                finding.unconfirmed.append(fact)
        elif fact.has("not-prostate-primary"):
            finding.traps.append(fact)
    by_id = {type_and_id(f.evidence.reference): f for f in finding.prostate}

    def record(category: str, where: str, confirmed: bool) -> None:
        finding.categories.setdefault(category, []).append(where)
        if confirmed:
            finding.confirmed.setdefault(category, []).append(where)

    for fact in finding.prostate:
        confirmed = fact not in finding.unconfirmed
        status = (
            ""
            if confirmed
            else f", recorded as {_article(verification(fact))} {verification(fact)} diagnosis"
        )
        for category in _categories_of(ctx, fact.resource.get("code")):
            record(category, f"{fact.label}{fact.dated}{status}", confirmed)
        for extension in fact.resource.get("extension") or []:
            if extension.get("url") == MCODE_HISTOLOGY_EXTENSION:
                value = extension.get("valueCodeableConcept")
                where = f"{_label(value)} (mCODE histology of {fact.label}{status})"
                for category in _categories_of(ctx, value):
                    record(category, where, confirmed)
    for obs in ctx.facts.observations_of("histology-observation"):
        about = _about(obs)
        targets = [by_id[a] for a in about if a in by_id]
        site = ctx.mappings.vs("site-local").matches(obs.resource.get("bodySite"))
        if not targets and (about or not finding.prostate or not site):
            continue
        confirmed = not targets or any(t not in finding.unconfirmed for t in targets)
        values = [obs.resource.get("valueCodeableConcept")] + [
            c.get("valueCodeableConcept") for c in obs.resource.get("component") or []
        ]
        seen = False
        for value in values:
            for category in _categories_of(ctx, value):
                where = f"{_label(value)} (histology result of {obs.day})"
                record(category, where, confirmed)
                seen = True
        if seen:
            finding.evidence.append(obs.evidence)
    return finding


def _label(concept: Any) -> str:
    if isinstance(concept, dict):
        if isinstance(concept.get("text"), str):
            return str(concept["text"])
        for coding in concept.get("coding") or []:
            if isinstance(coding, dict):
                shown = coding.get("display") or coding.get("code")
                if isinstance(shown, str):
                    return shown
    return "histology"


# -- decisions on a set of categories ------------------------------------------------------


def _histology_from(seen: dict[str, list[str]], prostate: str) -> tuple[Result, str]:
    adeno = seen.get(ADENO, []) + seen.get(ACINAR_CELL, [])
    excluded = seen.get(SMALL_CELL, []) + seen.get(DUCTAL, [])
    if adeno:
        text = f"Prostate adenocarcinoma: {join_names(adeno)}."
        if ACINAR_CELL in seen:
            text += (
                " ICD-O-3 8550/3 (acinar cell carcinoma) on a prostate cancer is read as a "
                "miscoded acinar adenocarcinoma (WHO ICD-O-3.2 files prostate acinar "
                "adenocarcinoma under 8140/3)."
            )
        if excluded or NE_UNCERTAIN in seen:
            others = join_names(excluded + seen.get(NE_UNCERTAIN, []))
            text += f" Also recorded: {others} (see excluded-histology)."
        return Result.MET, text
    if excluded:
        text = (
            f"Histology is small-cell or ductal only: {join_names(excluded)}; not acinar "
            "adenocarcinoma."
        )
        return Result.NOT_MET, text
    if NE_UNCERTAIN in seen:
        text = (
            f"The only histology is neuroendocrine carcinoma NOS or large-cell neuroendocrine "
            f"carcinoma ({join_names(seen[NE_UNCERTAIN])}): it may be small-cell carcinoma or the "
            f"neuroendocrine dedifferentiation the protocol includes. {PATHOLOGY}"
        )
        return Result.UNKNOWN, text
    if OTHER in seen:
        text = (
            f"Prostate cancer of another histology ({join_names(seen[OTHER])}): not "
            f"adenocarcinoma. {PATHOLOGY}"
        )
        return Result.UNKNOWN, text
    return Result.UNKNOWN, f"Prostate cancer recorded without histology: {prostate}. {PATHOLOGY}"


def _excluded_from(seen: dict[str, list[str]], _: str) -> tuple[Result, str]:
    if SMALL_CELL in seen:
        return (
            Result.MET,
            f"Small-cell prostate carcinoma recorded: {join_names(seen[SMALL_CELL])}.",
        )
    adeno = seen.get(ADENO, []) + seen.get(ACINAR_CELL, [])
    if DUCTAL in seen and not adeno:
        text = f"Pure ductal adenocarcinoma recorded (no acinar component): {join_names(seen[DUCTAL])}."
        return Result.MET, text
    if DUCTAL in seen:
        text = (
            f"Mixed acinar-ductal adenocarcinoma ({join_names(seen[DUCTAL] + adeno)}): the listing "
            "excludes ductal adenocarcinoma; whether a ductal component excludes is the tumour "
            "board's call. Chase: the pathology report's share of ductal component (pathology "
            "department)."
        )
        return Result.UNKNOWN, text
    if NE_UNCERTAIN in seen:
        text = (
            f"Neuroendocrine carcinoma NOS or large-cell neuroendocrine carcinoma recorded "
            f"({join_names(seen[NE_UNCERTAIN])}): it may be small-cell (excluded) or "
            f"neuroendocrine dedifferentiation (included). {PATHOLOGY}"
        )
        return Result.UNKNOWN, text
    return Result.NOT_MET, "No small-cell or ductal prostate histology recorded."


def _decide(
    ctx: Context,
    decide: Callable[[dict[str, list[str]], str], tuple[Result, str]],
    inclusion: bool,
) -> Decision:
    """Decide on the confirmed records; unconfirmed ones that would change it give unknown.

    For the inclusion, a prostate cancer recorded only as unconfirmed is `unknown` whatever its
    histology (with it the patient has a diagnosis, without it none: it alone decides)."""
    finding = find_histology(ctx)
    evidence = tuple(finding.evidence)
    names = join_names([f"{f.label}{f.dated}" for f in finding.prostate])
    result, text = decide(finding.confirmed, names)
    with_all, _ = decide(finding.categories, names)
    doubtful = list(finding.unconfirmed)
    never = "an unconfirmed, provisional or differential diagnosis never decides on its own"
    chase = "Chase: the confirmed diagnosis in the pathology report (pathology department)."
    if doubtful and inclusion and not finding.has_confirmed_prostate:
        text = (
            f"Prostate cancer recorded only as an unconfirmed diagnosis: "
            f"{named_unconfirmed(doubtful)}; {never}. {chase}"
        )
        return Decision(Result.UNKNOWN, text, evidence)
    if doubtful and with_all is not result:
        text = (
            f"{text.removesuffix(PATHOLOGY).strip()} But {named_unconfirmed(doubtful)} would "
            f"change this result, and {never}. {chase}"
        )
        return Decision(Result.UNKNOWN, text, evidence)
    if doubtful:
        text += f" Not used (unconfirmed): {named_unconfirmed(doubtful)}."
    return Decision(result, text, evidence)


@criterion("histology", Kind.INCLUSION, reads=HISTOLOGY_CONCEPTS)
def histology(ctx: Context) -> Decision:
    finding = find_histology(ctx)
    if not finding.prostate:
        reason = "No prostate cancer diagnosis recorded."
        evidence: tuple[Evidence, ...] = ()
        if finding.traps:
            names = join_names([f"{t.label}{t.dated}" for t in finding.traps])
            reason += f" {names} is a malignancy involving the prostate from another primary, not prostate cancer."
            evidence = tuple(t.evidence for t in finding.traps)
        return Decision(Result.NOT_MET, reason, evidence)
    return _decide(ctx, _histology_from, inclusion=True)


@criterion("excluded-histology", Kind.EXCLUSION, reads=HISTOLOGY_CONCEPTS)
def excluded_histology(ctx: Context) -> Decision:
    finding = find_histology(ctx)
    if not finding.prostate:
        return Decision(
            Result.NOT_MET, "No prostate cancer diagnosis, so no excluded histology recorded."
        )
    return _decide(ctx, _excluded_from, inclusion=False)
