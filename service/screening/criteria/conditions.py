"""other-malignancy and spinal-lesion: read from Conditions (criteria.md §3 exclusions)."""

from __future__ import annotations

from service.screening.concepts import MALIGNANCY_BY_NAME, SITE_CONCEPTS, SKIN_BY_NAME
from service.screening.context import Context, join_names
from service.screening.facts import ClinicalFact
from service.screening.result import Decision, Result

ACTIVE_STATUSES = {"active", "recurrence", "relapse"}
_NOT_OTHER_PRIMARY = (
    "prostate-cancer",
    "prostate-other-histology",
    "in-situ",
    "history-of-malignancy",
)


def _named(facts: list[ClinicalFact]) -> str:
    return join_names([f"{f.label} ({f.evidence.reference})" for f in facts])


def other_malignancy(ctx: Context) -> Decision:
    active: list[ClinicalFact] = []
    no_status: list[ClinicalFact] = []
    inactive: list[ClinicalFact] = []
    skin: list[ClinicalFact] = []
    by_name: list[ClinicalFact] = []
    for fact in ctx.facts.conditions:
        if any(fact.has(c) for c in (*_NOT_OTHER_PRIMARY, *SITE_CONCEPTS)):
            continue
        if fact.has(SKIN_BY_NAME) or (
            fact.has("skin-keratinocyte-carcinoma") and not fact.has("malignancy-primary")
        ):
            skin.append(fact)
            continue
        if not (fact.has("malignancy-primary") or fact.has(MALIGNANCY_BY_NAME)):
            continue
        if fact.has(MALIGNANCY_BY_NAME):
            by_name.append(fact)
        if fact.status in ACTIVE_STATUSES:
            active.append(fact)
        elif fact.status is None:
            no_status.append(fact)
        else:
            inactive.append(fact)
    notes = ""
    if inactive:
        notes += f" Not active: {_named(inactive)}."
    if skin:
        notes += f" Basal/squamous cell skin carcinoma does not count: {_named(skin)}."
    if by_name:
        notes += f" Recognised by name: {_named(by_name)}."
    if active or no_status:
        parts = []
        if active:
            parts.append(f"active {_named(active)}")
        if no_status:
            parts.append(f"{_named(no_status)} without a clinical status")
        reason = (
            f"Other malignancy recorded: {join_names(parts)}. Whether it could interfere with the "
            f"trial is a clinical judgement; review.{notes}"
        )
        return Decision(Result.UNKNOWN, reason, tuple(f.evidence for f in active + no_status))
    evidence = tuple(f.evidence for f in inactive + skin)
    return Decision(
        Result.NOT_MET, "No active malignancy other than prostate cancer." + notes, evidence
    )


def spinal_lesion(ctx: Context) -> Decision:
    complications = ctx.facts.conditions_of("spinal-complication")
    active = [f for f in complications if f.status in ACTIVE_STATUSES]
    no_status = [f for f in complications if f.status is None]
    inactive = [
        f for f in complications if f.status is not None and f.status not in ACTIVE_STATUSES
    ]
    metastases = [
        f for f in ctx.facts.conditions_of("spinal-metastasis")
        if f.status is None or f.status in ACTIVE_STATUSES
    ]  # fmt: skip
    notes = f" Resolved or inactive: {_named(inactive)}." if inactive else ""
    if active:
        reason = f"Spinal complication recorded as active: {_named(active)}."
        return Decision(Result.MET, reason + notes, tuple(f.evidence for f in active))
    if no_status:
        reason = (
            f"Spinal complication recorded without a clinical status: {_named(no_status)}; review."
        )
        return Decision(Result.UNKNOWN, reason + notes, tuple(f.evidence for f in no_status))
    if metastases:
        reason = (
            f"Spinal (vertebral) metastasis recorded: {_named(metastases)}, without cord compression, "
            "cauda equina syndrome or pathological fracture; symptoms and fracture risk cannot be "
            "read from codes; review."
        )
        return Decision(Result.UNKNOWN, reason + notes, tuple(f.evidence for f in metastases))
    return Decision(
        Result.NOT_MET,
        "No spinal cord compression, cauda equina syndrome, pathological vertebral fracture "
        "or spinal metastasis recorded." + notes,
        tuple(f.evidence for f in inactive),
    )
