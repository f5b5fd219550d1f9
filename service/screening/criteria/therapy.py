"""systemic-therapy and prior-excluded-therapy: read from medication records and procedures."""

from __future__ import annotations

from service.screening.context import Context, join_names
from service.screening.facts import ClinicalFact, MedicationFact
from service.screening.result import Decision, Evidence, Result
from service.screening.therapy import describe, finished_before, is_ongoing, was_given


def _orchiectomies(ctx: Context) -> list[ClinicalFact]:
    return [f for f in ctx.facts.procedures_of("orchiectomy-bilateral") if f.status == "completed"]


def _procedure_text(fact: ClinicalFact) -> str:
    when = f" on {fact.day}" if fact.day else " (date not recorded)"
    recognised = "" if fact.resource.get("code", {}).get("coding") else " (recognised by name)"
    return f"{fact.label}{when}{recognised} ({fact.evidence.reference})"


def systemic_therapy(ctx: Context) -> Decision:
    params, as_of = ctx.params, ctx.as_of
    gnrh = ctx.facts.medications_of("gnrh")
    ongoing_adt = [m for m in gnrh if is_ongoing(m, as_of, params)]
    orchiectomies = _orchiectomies(ctx)
    if not ongoing_adt and not orchiectomies:
        reason = (
            "No ongoing androgen deprivation found (GnRH agonist/antagonist active on "
            f"{as_of}, or bilateral orchiectomy). Medication lists are often incomplete and depot "
            "injections are often recorded elsewhere; review."
        )
        given = [m for m in gnrh if was_given(m)]
        if given:
            reason += f" Not covering {as_of}: {join_names([describe(m, params) for m in given])}."
        return Decision(Result.UNKNOWN, reason, tuple(m.evidence for m in given))
    evidence: list[Evidence] = [m.evidence for m in ongoing_adt] + [
        f.evidence for f in orchiectomies
    ]
    adt_parts = [describe(m, params) for m in ongoing_adt] + [
        _procedure_text(f) for f in orchiectomies
    ]
    reason = f"Ongoing androgen deprivation: {join_names(adt_parts)}."
    arta = [m for m in ctx.facts.medications_of("arta") if is_ongoing(m, as_of, params)]
    docetaxel = ctx.facts.medications_of("docetaxel")
    finished = [m for m in docetaxel if finished_before(m, as_of, params)]
    running = [m for m in docetaxel if is_ongoing(m, as_of, params)]
    first_gen = [m for m in ctx.facts.medications_of("first-gen-antiandrogen") if was_given(m)]
    notes = ""
    if first_gen:
        names = join_names([describe(m, params) for m in first_gen])
        notes += f" First-generation antiandrogen ({names}) does not make type 2."
    if arta or finished:
        parts = [f"ARTA ongoing: {describe(m, params)}" for m in arta]
        parts += [f"docetaxel given and finished: {describe(m, params)}" for m in finished]
        evidence += [m.evidence for m in arta + finished]
        reason = f"{reason} Patient type 2 ({'; '.join(parts)}).{notes}"
        return Decision(Result.MET, reason, tuple(evidence), patient_type=2)
    if running:
        notes += f" Docetaxel is still ongoing, not finished: {join_names([describe(m, params) for m in running])}."
    reason += " Patient type 1 (no ongoing ARTA, no finished docetaxel)."
    return Decision(Result.MET, reason + notes, tuple(evidence), patient_type=1)


def _excluded_drug_records(ctx: Context) -> tuple[list[MedicationFact], list[MedicationFact]]:
    """(clear records, ambiguous records) of radionuclides, cabazitaxel and PARP inhibitors."""
    clear, ambiguous = [], []
    for fact in ctx.facts.medications_of("excluded-therapy"):
        if fact.status in ("not-taken", "intended", "not-done"):
            continue
        if fact.status in ("cancelled", "draft"):
            ambiguous.append(fact)
        else:
            clear.append(fact)
    return clear, ambiguous


def _excluded_labels(ctx: Context, facts: list[MedicationFact]) -> str:
    parts = []
    for fact in facts:
        drugs = join_names([m.describe() for m in fact.matches_of("excluded-therapy")])
        parts.append(f"{drugs}, {fact.resource_type} {fact.status} ({fact.evidence.reference})")
    return join_names(parts)


def prior_excluded_therapy(ctx: Context) -> Decision:
    clear, ambiguous = _excluded_drug_records(ctx)
    procedures = [
        f for f in ctx.facts.procedures_of("radionuclide-therapy-specific")
        if f.status not in ("not-done", "preparation")
    ]  # fmt: skip
    generic = [
        f for f in ctx.facts.procedures_of("radionuclide-therapy-generic")
        if f.status not in ("not-done", "preparation")
    ]  # fmt: skip
    if clear or procedures:
        parts = []
        if clear:
            parts.append(_excluded_labels(ctx, clear))
        if procedures:
            parts.append(join_names([_procedure_text(f) for f in procedures]))
        reason = f"Previously treated with an excluded therapy: {'; '.join(parts)}."
        evidence = tuple(f.evidence for f in clear) + tuple(f.evidence for f in procedures)
        return Decision(Result.MET, reason, evidence)
    if ambiguous or generic:
        parts = []
        if ambiguous:
            parts.append(
                f"{_excluded_labels(ctx, ambiguous)} (a cancelled or draft order: may never have been given)"
            )
        if generic:
            parts.append(
                f"{join_names([_procedure_text(f) for f in generic])} (radionuclide not named)"
            )
        reason = f"Possible excluded therapy: {'; '.join(parts)}; review."
        evidence = tuple(f.evidence for f in ambiguous) + tuple(f.evidence for f in generic)
        return Decision(Result.UNKNOWN, reason, evidence)
    return Decision(
        Result.NOT_MET, "No radionuclide therapy, cabazitaxel or PARP inhibitor recorded."
    )
