"""The engine: a PatientRecord and a day in, a ScreenResult (criteria.md §7) out.

It applies every criterion of criteria.md §3 in order, then the safety net of §1: a criterion
that would rule the patient out while a resource it depends on could not be read becomes
`unknown` (unreadable data is ambiguous data). No HTTP, no files, no clock: deterministic.
"""

from __future__ import annotations

from datetime import date

from service import __version__
from service.fhir.record import PatientRecord
from service.mapping.model import Mappings
from service.screening.context import Context
from service.screening.criteria.histology import find_histology
from service.screening.criterion import Criterion
from service.screening.decision import rules_out
from service.screening.extract import FactExtractor
from service.screening.lesions.strata import localization as lesion_localization
from service.screening.lesions.strata import metastases_stratum
from service.screening.registry import REGISTRY
from service.screening.result import CriterionResult, Kind, Result, ScreenResult, Status


class Screener:
    """Built once per Mappings (it indexes the value sets); screens any number of records."""

    def __init__(self, mappings: Mappings) -> None:
        self.mappings = mappings
        self.extractor = FactExtractor(mappings)

    def screen(self, record: PatientRecord, as_of: date) -> ScreenResult:
        facts = self.extractor.extract(record, as_of)
        ctx = Context(facts=facts, mappings=self.mappings, as_of=as_of)
        decided = [self._decide(ctx, criterion) for criterion in REGISTRY]
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

    def _decide(self, ctx: Context, criterion: Criterion) -> tuple[CriterionResult, int | None]:
        decision = criterion.decide(ctx)
        result, reason = decision.result, decision.reason
        kind, concepts = criterion.kind, criterion.reads
        unreadable = [u for u in ctx.facts.unreadable if u.concepts & concepts]
        if unreadable:
            listed = "; ".join(f"{u.reference} ({u.problem})" for u in unreadable)
            if rules_out(kind, result) or (not decision.evidence and result is not Result.MANUAL):
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
        return CriterionResult(criterion.id, kind, result, reason, decision.evidence), patient_type


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
    # criteria.md §6 (medcare-2): lesions/strata.py reads both from every place a site is written
    metastases = metastases_stratum(ctx)
    localization = lesion_localization(ctx)
    systemic = {1: "type-1", 2: "type-2"}.get(patient_type) if patient_type else None
    return {"metastases": metastases, "localization": localization, "systemic_therapy": systemic}
