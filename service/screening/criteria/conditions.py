"""other-malignancy and spinal-lesion: read from Conditions (criteria.md §3 exclusions)."""

from __future__ import annotations

from service.screening.bodysites import is_unconfirmed, verification
from service.screening.concepts import MALIGNANCY_BY_NAME, SITE_CONCEPTS, SKIN_BY_NAME
from service.screening.context import Context, join_names
from service.screening.criterion import criterion
from service.screening.decision import Decision, Kind, Result
from service.screening.facts import ClinicalFact
from service.screening.lesions.metastases import (
    bone_metastases_without_site,
    spinal_metastasis_sites,
)

ACTIVE_STATUSES = {"active", "recurrence", "relapse"}
# criteria.md §3 spinal-lesion: a complication with an onset (or recorded date) within 90 days.
SPINAL_COMPLICATION_DAYS = 90
_NOT_OTHER_PRIMARY = (
    "prostate-cancer",
    "prostate-other-histology",
    "in-situ",
    "history-of-malignancy",
)


def _named(facts: list[ClinicalFact]) -> str:
    """'lung cancer (Condition/7)', with an unconfirmed verification status said."""
    return join_names(
        [
            f"{f.label}{f.dated}{f', recorded as {verification(f)}' if is_unconfirmed(f) else ''}"
            for f in facts
        ]
    )


@criterion(
    "other-malignancy",
    Kind.EXCLUSION,
    reads={"malignancy-primary", "skin-keratinocyte-carcinoma", MALIGNANCY_BY_NAME, SKIN_BY_NAME},
)
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
            f"trial is a clinical judgement.{notes} Chase: its current status and treatment "
            "(treating specialist)."
        )
        return Decision(Result.UNKNOWN, reason, tuple(f.evidence for f in active + no_status))
    evidence = tuple(f.evidence for f in inactive + skin)
    return Decision(
        Result.NOT_MET, "No active malignancy other than prostate cancer." + notes, evidence
    )


def _onset_text(fact: ClinicalFact) -> str:
    return f"onset {fact.day}" if fact.day else "no date recorded"


@criterion("spinal-lesion", Kind.EXCLUSION, reads={"spinal-complication", "spinal-metastasis"})
def spinal_lesion(ctx: Context) -> Decision:
    """criteria.md §3 spinal-lesion, medcare-2: a complication within 90 days is `met`; older but
    still active, undated, unconfirmed or without a status is `unknown` (with its date); spinal
    prostate metastases without a complication are `unknown` (symptoms cannot be read from
    codes); another primary's metastases are not spinal prostate metastases."""
    days = SPINAL_COMPLICATION_DAYS
    complications = [
        f for f in ctx.facts.conditions_of("spinal-complication")
        if f.status is None or f.status in ACTIVE_STATUSES
    ]  # fmt: skip
    inactive = [
        f for f in ctx.facts.conditions_of("spinal-complication")
        if f.status is not None and f.status not in ACTIVE_STATUSES
    ]  # fmt: skip
    notes = f" Resolved or inactive: {_named(inactive)}." if inactive else ""
    recent, doubtful = [], []
    for fact in complications:
        if is_unconfirmed(fact):
            doubtful.append(
                f"{fact.label} ({_onset_text(fact)}), recorded as {verification(fact)}: an "
                "unconfirmed diagnosis never decides on its own"
            )
        elif fact.status is None:
            doubtful.append(f"{fact.label} without a clinical status ({_onset_text(fact)})")
        elif fact.day is None:
            doubtful.append(f"{fact.label}, active, {_onset_text(fact)}")
        elif ctx.in_window(fact.day, days):
            recent.append(fact)
        else:
            doubtful.append(
                f"{fact.label}, {_onset_text(fact)}, more than {days} days ago but still "
                "recorded as active: is it still threatening?"
            )
    if recent:
        reason = (
            f"Spinal complication within {days} days: "
            f"{join_names([f'{f.label}, {_onset_text(f)}' for f in recent])}." + notes
        )
        return Decision(Result.MET, reason, tuple(f.evidence for f in recent))
    chase = "Chase: the current neurological status and spine imaging (treating oncologist)."
    if doubtful:
        reason = f"Spinal complication to review: {'; '.join(doubtful)}.{notes} {chase}"
        evidence = tuple(f.evidence for f in complications)
        return Decision(Result.UNKNOWN, reason, evidence)
    spinal = spinal_metastasis_sites(ctx)
    if spinal:
        named = join_names(
            [f"{f.label} ({site.name}{f', {f.day}' if f.day else ''})" for f, site in spinal]
        )
        reason = (
            f"Spinal (vertebral) metastasis recorded: {named}, without cord compression, cauda "
            "equina syndrome or pathological fracture; symptoms and fracture risk cannot be read "
            f"from codes.{notes} Chase: whether it is symptomatic or at risk of fracture (treating "
            "oncologist or radiation oncologist)."
        )
        return Decision(Result.UNKNOWN, reason, tuple(f.evidence for f, _ in spinal))
    unsited = bone_metastases_without_site(ctx)
    if unsited:
        reason = (
            "No spinal cord compression, cauda equina syndrome or pathological vertebral fracture "
            f"recorded; spinal involvement is not known: bone metastases are recorded without a "
            f"site ({_named(unsited)})." + notes
        )
        return Decision(Result.NOT_MET, reason, tuple(f.evidence for f in unsited + inactive))
    return Decision(
        Result.NOT_MET,
        "No spinal cord compression, cauda equina syndrome, pathological vertebral fracture "
        "or spinal metastasis recorded." + notes,
        tuple(f.evidence for f in inactive),
    )
