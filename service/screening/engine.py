"""The engine: a PatientRecord and a day in, a ScreenResult (criteria.md §7) out.

It applies every criterion of criteria.md §3 in order, then the safety net of §1: a criterion
that would rule the patient out while a resource it depends on could not be read becomes
`unknown` (unreadable data is ambiguous data). No HTTP, no files, no clock: deterministic.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date

from service import __version__
from service.fhir.record import PatientRecord
from service.mapping.model import Mappings
from service.screening.concepts import MALIGNANCY_BY_NAME, SITE_CONCEPTS, SKIN_BY_NAME
from service.screening.context import Context
from service.screening.criteria import (
    conditions,
    demographics,
    histology,
    manual,
    performance,
    primary,
    progression,
    testosterone,
    therapy,
)
from service.screening.criteria.histology import find_histology
from service.screening.extract import MEDICATION_CONCEPT, FactExtractor
from service.screening.lesions import localization as lesion_localization
from service.screening.lesions import metastases_stratum
from service.screening.result import (
    CRITERIA,
    CriterionResult,
    Decision,
    Kind,
    Result,
    ScreenResult,
    Status,
)

CriterionFunction = Callable[[Context], Decision]

DECIDERS: dict[str, CriterionFunction] = {
    "consent": manual.manual("consent"),
    "histology": histology.histology,
    "oligoprogression": progression.oligoprogression,
    "systemic-therapy": therapy.systemic_therapy,
    "castrate-testosterone": testosterone.castrate_testosterone,
    "primary-treated": primary.primary_treated,
    "performance-status": performance.performance_status,
    "age": demographics.age,
    "sex": demographics.sex,
    "compliance": manual.manual("compliance"),
    "tumour-board": manual.manual("tumour-board"),
    "excluded-histology": histology.excluded_histology,
    "testosterone-above-castrate": testosterone.testosterone_above_castrate,
    "polyprogression": progression.polyprogression,
    "other-malignancy": conditions.other_malignancy,
    "sbrt-contraindicated": manual.manual("sbrt-contraindicated"),
    "spinal-lesion": conditions.spinal_lesion,
    "prior-excluded-therapy": therapy.prior_excluded_therapy,
    "progression-on-docetaxel": progression.progression_on_docetaxel,
    "unable-to-consent": manual.manual("unable-to-consent"),
    "deceased": demographics.deceased,
}

_LESIONS = frozenset({"lesion-count", "imaging-lesion", "disease-status", *SITE_CONCEPTS})
_HISTOLOGY = frozenset({
    "prostate-cancer", "prostate-other-histology", "histology-adenocarcinoma",
    "histology-excluded", "histology-observation",
})  # fmt: skip
# The concepts (value sets, drug classes) each criterion reads: an unreadable or ignored resource
# of one of these is reported in that criterion's reason.
DEPENDS_ON: dict[str, frozenset[str]] = {
    "histology": _HISTOLOGY,
    "excluded-histology": _HISTOLOGY,
    "oligoprogression": _LESIONS,
    "polyprogression": _LESIONS,
    "progression-on-docetaxel": _LESIONS | {"docetaxel", MEDICATION_CONCEPT},
    "systemic-therapy": frozenset(
        {
            "gnrh",
            "arta",
            "docetaxel",
            "first-gen-antiandrogen",
            "orchiectomy-bilateral",
            MEDICATION_CONCEPT,
        }
    ),
    "castrate-testosterone": frozenset({"testosterone-total"}),
    "testosterone-above-castrate": frozenset({"testosterone-total"}),
    "performance-status": frozenset({"ecog", "karnofsky"}),
    "primary-treated": frozenset(
        {"radical-prostatectomy", "brachytherapy", "external-beam-rt", "prostatectomy-generic"}
    ),
    "other-malignancy": frozenset(
        {"malignancy-primary", "skin-keratinocyte-carcinoma", MALIGNANCY_BY_NAME, SKIN_BY_NAME}
    ),
    "spinal-lesion": frozenset({"spinal-complication", "spinal-metastasis"}),
    "prior-excluded-therapy": frozenset(
        {
            "excluded-therapy",
            "radionuclide-therapy-specific",
            "radionuclide-therapy-generic",
            MEDICATION_CONCEPT,
        }
    ),
}


class Screener:
    """Built once per Mappings (it indexes the value sets); screens any number of records."""

    def __init__(self, mappings: Mappings) -> None:
        self.mappings = mappings
        self.extractor = FactExtractor(mappings)

    def screen(self, record: PatientRecord, as_of: date) -> ScreenResult:
        facts = self.extractor.extract(record, as_of)
        ctx = Context(facts=facts, mappings=self.mappings, as_of=as_of)
        decided = [self._decide(ctx, criterion_id, kind) for criterion_id, kind in CRITERIA]
        results = tuple(result for result, _ in decided)
        status = Status.INELIGIBLE if any(r.rules_out() for r in results) else Status.CANDIDATE
        patient_type = next(
            (ptype for result, ptype in decided if result.id == "systemic-therapy"), None
        )
        params = self.mappings.parameters
        return ScreenResult(
            patient=f"Patient/{record.patient_id}",
            study=params.study_id,
            as_of=as_of.isoformat(),
            status=status,
            patient_type=patient_type,
            strata=_strata(ctx, patient_type),
            # every unknown and manual criterion, informational ones too (criteria.md §2)
            needs_review=tuple(
                r.id for r in results if r.result in (Result.UNKNOWN, Result.MANUAL)
            ),
            missing_data=_missing_data(ctx, results),
            criteria=results,
            rules_version=params.rules_version,
            software_version=__version__,
            notes=tuple(record.problems),
        )

    def _decide(
        self, ctx: Context, criterion_id: str, kind: Kind
    ) -> tuple[CriterionResult, int | None]:
        decision = DECIDERS[criterion_id](ctx)
        result, reason = decision.result, decision.reason
        concepts = DEPENDS_ON.get(criterion_id, frozenset())
        unreadable = [u for u in ctx.facts.unreadable if u.concepts & concepts]
        if unreadable:
            listed = "; ".join(f"{u.reference} ({u.problem})" for u in unreadable)
            would_rule_out = (kind is Kind.INCLUSION and result is Result.NOT_MET) or (
                kind is Kind.EXCLUSION and result is Result.MET
            )
            if would_rule_out or (not decision.evidence and result is not Result.MANUAL):
                result = Result.UNKNOWN
                reason = (
                    f"{reason} But a resource this depends on could not be read: {listed}. Chase: "
                    "a corrected record (the system that sent it)."
                )
            else:
                reason = f"{reason} Could not be read: {listed}."
        ignored = ctx.facts.ignored_for(set(concepts))
        if ignored:
            reason += " Not used: " + "; ".join(f"{ref} ({why})" for ref, why in ignored) + "."
        patient_type = decision.patient_type if result is Result.MET else None
        return CriterionResult(criterion_id, kind, result, reason, decision.evidence), patient_type


def _missing_data(ctx: Context, results: tuple[CriterionResult, ...]) -> tuple[str, ...]:
    """The `unknown` inclusions and exclusions to chase (criteria.md §2); an informational
    criterion is never in it, and after a hard exclusion (deceased, or no prostate cancer
    diagnosis at all) there is nothing to chase, so it is empty (§7b, medcare-2)."""
    by_id = {r.id: r for r in results}
    deceased = by_id["deceased"].result is Result.MET
    no_prostate_cancer = (
        by_id["histology"].result is Result.NOT_MET and not find_histology(ctx).prostate
    )
    if deceased or no_prostate_cancer:
        return ()
    return tuple(
        r.id for r in results if r.result is Result.UNKNOWN and r.kind is not Kind.INFORMATIONAL
    )


def _strata(ctx: Context, patient_type: int | None) -> dict[str, str | None]:
    # criteria.md §6 (medcare-2): lesions.py reads both from every place a site is written
    metastases = metastases_stratum(ctx)
    localization = lesion_localization(ctx)
    systemic = {1: "type-1", 2: "type-2"}.get(patient_type) if patient_type else None
    return {"metastases": metastases, "localization": localization, "systemic_therapy": systemic}
