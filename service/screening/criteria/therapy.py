"""systemic-therapy and prior-excluded-therapy: read from medication records and procedures."""

from __future__ import annotations

from datetime import date

from service.fhir.dates import add_months
from service.screening.context import Context, join_names
from service.screening.criterion import criterion
from service.screening.decision import Decision, Evidence, Kind, Result
from service.screening.extract import MEDICATION_CONCEPT
from service.screening.facts import ClinicalFact, MedicationFact
from service.screening.nearmiss import BLINDED, near_miss_note, near_misses_for
from service.screening.therapy import (
    LONG_ORDER_MONTHS,
    DocetaxelCourse,
    describe,
    docetaxel_course,
    drug_names,
    is_ongoing,
    was_given,
)
from service.screening.units import castrate_readings


def _orchiectomies(ctx: Context) -> list[ClinicalFact]:
    return [f for f in ctx.facts.procedures_of("orchiectomy-bilateral") if f.status == "completed"]


def _procedure_text(fact: ClinicalFact) -> str:
    when = f" on {fact.day}" if fact.day else " (date not recorded)"
    recognised = "" if fact.resource.get("code", {}).get("coding") else " (recognised by name)"
    return f"{fact.label}{when}{recognised}"


@criterion(
    "systemic-therapy",
    Kind.INCLUSION,
    reads={
        "gnrh",
        "arta",
        "docetaxel",
        "first-gen-antiandrogen",
        "orchiectomy-bilateral",
        MEDICATION_CONCEPT,
    },
)
def systemic_therapy(ctx: Context) -> Decision:
    params, as_of = ctx.params, ctx.as_of
    gnrh = ctx.facts.medications_of("gnrh")
    ongoing_adt = [m for m in gnrh if is_ongoing(m, as_of, params)]
    orchiectomies = _orchiectomies(ctx)
    course = docetaxel_course(ctx, as_of)
    notes = _therapy_notes(ctx, course)
    if not ongoing_adt and not orchiectomies:
        reason = (
            "No ongoing androgen deprivation found (GnRH agonist/antagonist active on "
            f"{as_of}, or bilateral orchiectomy). Medication lists are often incomplete and depot "
            "injections are often recorded elsewhere."
        )
        given = [m for m in gnrh if was_given(m)]
        if given:
            reason += f" Not covering {as_of}: {join_names([describe(m, params) for m in given])}."
        reason += notes + near_miss_note(ctx, "systemic-therapy")
        reason += " Chase: the last ADT injection date (GP, urologist or home nurse)."
        return Decision(Result.UNKNOWN, reason, tuple(m.evidence for m in given))
    evidence: list[Evidence] = [m.evidence for m in ongoing_adt] + [
        f.evidence for f in orchiectomies
    ]
    adt_parts = [describe(m, params) for m in ongoing_adt] + [
        _procedure_text(f) for f in orchiectomies
    ]
    reason = f"Ongoing androgen deprivation: {join_names(adt_parts)}."
    reason += _long_running_orders(ctx, ongoing_adt, "gnrh")
    arta = [m for m in ctx.facts.medications_of("arta") if is_ongoing(m, as_of, params)]
    notes = _long_running_orders(ctx, arta, "arta") + notes
    if course.ongoing:
        evidence += course.evidence
        reason += (
            f" Docetaxel is ongoing on {as_of} ({'; '.join(course.ongoing)}): neither type 1 nor "
            f"type 2 until the course ends.{notes} Chase: the date of the last planned docetaxel "
            "cycle (day hospital or oncologist)."
        )
        return Decision(Result.UNKNOWN, reason, tuple(evidence))
    exposure = course.finished + course.end_unknown + course.stopped_for_progression
    if arta or exposure:
        parts = [f"ARTA ongoing: {describe(m, params, 'arta')}" for m in arta]
        if exposure:
            parts.append(f"docetaxel given before {as_of}: {'; '.join(exposure)}")
            evidence += course.evidence
        evidence += [m.evidence for m in arta]
        reason = f"{reason} Patient type 2 ({'; '.join(parts)}).{notes}"
        return Decision(Result.MET, reason, tuple(evidence), patient_type=2)
    reason += " Patient type 1 (pADT only: no ongoing ARTA, no docetaxel recorded)."
    return Decision(Result.MET, reason + notes, tuple(evidence), patient_type=1)


def _therapy_notes(ctx: Context, course: DocetaxelCourse) -> str:
    """What does not make type 2 but the board may want to know."""
    params, as_of = ctx.params, ctx.as_of
    notes = ""
    first_gen = [m for m in ctx.facts.medications_of("first-gen-antiandrogen") if was_given(m)]
    if first_gen:
        names = join_names([describe(m, params, "first-gen-antiandrogen") for m in first_gen])
        notes += f" First-generation antiandrogen ({names}) does not make type 2."
    stopped = [
        m for m in ctx.facts.medications_of("arta")
        if was_given(m) and not is_ongoing(m, as_of, params)
        and (m.start is None or m.start.earliest <= as_of)
    ]  # fmt: skip
    if stopped:
        names = join_names([describe(m, params, "arta") for m in stopped])
        notes += (
            f" An ARTA no longer ongoing on {as_of} ({names}) does not make type 2 (the listing's "
            "type 2 is an ARTA as ongoing treatment); the sponsor may want to know."
        )
    return notes


def _long_running_orders(ctx: Context, ongoing: list[MedicationFact], drug_class: str) -> str:
    """An active ADT or ARTA order older than 12 months with nothing newer supporting it (§4b):
    said, without changing the result."""
    since = add_months(ctx.as_of, -LONG_ORDER_MONTHS)
    old = [
        m for m in ongoing
        if not m.is_administration and m.start is not None and m.start.earliest <= since
        and m.end is None
    ]  # fmt: skip
    if not old:
        return ""
    newer = [
        m for m in ctx.facts.medications_of(drug_class)
        if was_given(m) and m.start is not None and m.start.earliest > since
    ]  # fmt: skip
    if newer or _castrate_since(ctx, since):
        return ""
    label = "ADT" if drug_class == "gnrh" else "ARTA"
    names = join_names([f"{drug_names(m, drug_class)} since {m.start}" for m in old])
    return (
        f" Note: the {label} record ({names}) is older than {LONG_ORDER_MONTHS} months and nothing "
        f"in the last {LONG_ORDER_MONTHS} months supports it (no administration, dispense or "
        "testosterone below 50 ng/dL): confirm it is still taken (GP, urologist or home nurse)."
    )


def _castrate_since(ctx: Context, since: date) -> bool:
    """Whether a castrate total testosterone on or after `since` supports an old ADT order."""
    since_then = (
        fact
        for fact in ctx.facts.observations_of("testosterone-total")
        if fact.day is not None and fact.day.earliest >= since
    )
    return next(castrate_readings(ctx, since_then), None) is not None


# criteria.md §3 prior-excluded-therapy: what shows that something was given.
_ADMINISTERED = {"in-progress", "completed", "stopped", "on-hold"}
_PROCEDURE_DONE = {"in-progress", "completed", "stopped"}
_NOT_GIVEN = {"not-taken", "intended", "not-done", "preparation", "do-not-perform"}
_MAY_HAVE_BEEN = {"cancelled", "draft", "unknown", None}
EXCLUDED = "excluded-therapy"
CHASE_EXCLUDED = (
    "Chase: the treatment history (treating oncologist or nuclear medicine department)."
)


def _drug_keys(fact: MedicationFact) -> set[str]:
    return {m.drug.key for m in fact.matches_of(EXCLUDED)}


def _is_blinded(ctx: Context, fact: MedicationFact) -> bool:
    pattern = ctx.mappings.near_misses.blinded
    return pattern is not None and pattern.search(fact.product_text.casefold()) is not None


def _excluded_drug_records(
    ctx: Context,
) -> tuple[list[MedicationFact], list[tuple[MedicationFact, str]]]:
    """(clear records, (ambiguous record, why)) of radionuclides, cabazitaxel, PARP inhibitors.

    A cancelled or draft order, or one without a usable status, may have been given: unknown,
    unless an administration of the same drug is recorded, which decides (medcare-2). A record
    naming the drug as blinded or with placebo is unknown too."""
    records = [
        f for f in ctx.facts.medications_of(EXCLUDED)
        if f.status not in _NOT_GIVEN and (f.start is None or f.start.earliest <= ctx.as_of)
    ]  # fmt: skip
    given = set()
    for fact in records:
        if fact.is_administration and fact.status in _ADMINISTERED and not _is_blinded(ctx, fact):
            given |= _drug_keys(fact)
    clear: list[MedicationFact] = []
    ambiguous: list[tuple[MedicationFact, str]] = []
    for fact in records:
        if _is_blinded(ctx, fact):
            ambiguous.append((fact, "named as blinded or with placebo: may not have been the drug"))
        elif fact.is_administration and fact.status not in _ADMINISTERED:
            ambiguous.append((fact, f"an administration with status {fact.status or 'not given'}"))
        elif fact.status in _MAY_HAVE_BEEN and not _drug_keys(fact) <= given:
            why = f"a {fact.status} order" if fact.status else "a record without a usable status"
            ambiguous.append((fact, f"{why}: it may have been given"))
        else:
            clear.append(fact)
    return clear, ambiguous


def _excluded_label(ctx: Context, fact: MedicationFact) -> str:
    return describe(fact, ctx.params, EXCLUDED)


def _radionuclide_text(ctx: Context, fact: ClinicalFact) -> str:
    """'177Lu-PSMA-617 radioligand therapy on 2025-05-12 (recognised by name)'."""
    when = f" on {fact.day}" if fact.day else " (date not recorded)"
    code = fact.resource.get("code")
    listed = any(
        ctx.mappings.vs(c).matches(code)
        for c in ("radionuclide-therapy-specific", "radionuclide-therapy-generic")
    )
    return f"{fact.label}{when}{'' if listed else ' (recognised by name)'}"


@criterion(
    "prior-excluded-therapy",
    Kind.EXCLUSION,
    reads={
        "excluded-therapy",
        "radionuclide-therapy-specific",
        "radionuclide-therapy-generic",
        MEDICATION_CONCEPT,
    },
)
def prior_excluded_therapy(ctx: Context) -> Decision:
    clear, ambiguous = _excluded_drug_records(ctx)
    done: list[ClinicalFact] = []
    doubtful: list[tuple[ClinicalFact, str]] = []
    for fact in ctx.facts.procedures:
        specific = fact.has("radionuclide-therapy-specific")
        if not specific and not fact.has("radionuclide-therapy-generic"):
            continue
        if fact.status in ("not-done", "preparation", "entered-in-error"):
            continue
        if specific and fact.status in _PROCEDURE_DONE:
            done.append(fact)
        elif specific:
            doubtful.append(
                (fact, f"status {fact.status or 'not recorded'}: it may have been given")
            )
        else:
            doubtful.append(
                (fact, "a radionuclide therapy whose isotope is not named (iodine-131 for the "
                       "thyroid would not count)")
            )  # fmt: skip
    blinded = near_misses_for(ctx, BLINDED)
    if clear or done:
        parts = [_excluded_label(ctx, f) for f in clear] + [
            _radionuclide_text(ctx, f) for f in done
        ]
        reason = f"Previously treated with an excluded therapy: {'; '.join(parts)}."
        evidence = tuple(f.evidence for f in clear) + tuple(f.evidence for f in done)
        return Decision(Result.MET, reason, evidence)
    if ambiguous or doubtful or blinded:
        parts = [f"{_excluded_label(ctx, f)} ({why})" for f, why in ambiguous]
        parts += [f"{_radionuclide_text(ctx, f)} ({why})" for f, why in doubtful]
        parts += [
            f"'{m.text}'{f' on {m.day}' if m.day else ''} (a blinded or placebo-controlled study "
            "drug: it may have been an excluded therapy)"
            for m in blinded
        ]
        reason = f"Possible excluded therapy: {'; '.join(parts)}. {CHASE_EXCLUDED}"
        evidence = (
            tuple(f.evidence for f, _ in ambiguous)
            + tuple(f.evidence for f, _ in doubtful)
            + tuple(m.evidence for m in blinded)
        )
        return Decision(Result.UNKNOWN, reason, evidence)
    return Decision(
        Result.NOT_MET, "No radionuclide therapy, cabazitaxel or PARP inhibitor recorded."
    )
