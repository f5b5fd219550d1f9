"""oligoprogression, polyprogression and progression-on-docetaxel (criteria.md §3, §4).

Both progression criteria read the count range of lesions/. oligoprogression is `met` only
when 1 <= low and high <= 3 on conventional imaging, nothing intracranial is progressive,
castration is established and nothing conflicts; `not-met` only on exactly [0, 0] (never by a
size rule or PET alone) or low > 3. Reasons name the modality, the date, the date until which
the imaging stays valid, and everything set aside with its value (criteria.md §7b).
"""

from __future__ import annotations

from service.screening.concepts import SITE_CONCEPTS
from service.screening.context import Context, join_names
from service.screening.criterion import criterion
from service.screening.decision import Decision, Kind, Result
from service.screening.extract import MEDICATION_CONCEPT
from service.screening.lesions.model import Progression
from service.screening.lesions.progression import find_progression, valid_until
from service.screening.therapy import docetaxel_against

# what the progression criteria read (an unreadable one keeps them from ruling out)
LESION_CONCEPTS = frozenset({"lesion-count", "imaging-lesion", "disease-status", *SITE_CONCEPTS})

CHASE_IMAGING = (
    "Chase: conventional imaging (CT, MRI or bone scan) within the last {days} days with the "
    "number of progressive lesions (radiology report or tumour-board form)."
)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' if n != 1 else ''}"


def _range_words(progression: Progression) -> str:
    low, high = progression.low, progression.high
    if high == low:
        return _plural(low, "progressive extracranial lesion")
    if high is None:
        if progression.representation in ("disease-status",) and low <= 1:
            return "progression documented without a lesion count"
        if low == 0:
            return "possible progression, no certain progressive lesion, count not known"
        return f"at least {_plural(low, 'progressive extracranial lesion')} (count not closed)"
    return f"{low} to {high} progressive extracranial lesions ({high - low} only possible)"


def _head(ctx: Context, progression: Progression) -> str:
    text = f"{_range_words(progression)}: {progression.source()}"
    if progression.day is not None:
        text += (
            f"; progression dated {progression.day}, valid for randomisation until "
            f"{valid_until(ctx, progression.day.earliest)}"
        )
    return text[0].upper() + text[1:]


def _details(progression: Progression) -> str:
    parts = []
    if progression.possible:
        parts.append(
            "Possible lesions (not counted as certain): "
            f"{'; '.join(_grouped(progression.possible))}."
        )
    if progression.set_aside:
        parts.append(
            f"Not lesions by the protocol's size rule: {'; '.join(progression.set_aside)}."
        )
    if progression.no_size:
        parts.append(f"Counted without a size (none recorded): {'; '.join(progression.no_size)}.")
    if progression.unconfirmed:
        parts.append(
            f"Not used to decide (unconfirmed diagnoses): {'; '.join(progression.unconfirmed)}."
        )
    if progression.other_primary:
        parts.append(f"Not prostate lesions: {'; '.join(progression.other_primary)}.")
    other_sources = [s.text for s in progression.sources[1:]]
    if other_sources and not progression.conflict:
        parts.append(f"Also in the window: {'; '.join(other_sources)}.")
    if progression.notes:
        parts.append(f"Notes: {'; '.join(progression.notes)}.")
    return (" " + " ".join(parts)) if parts else ""


def _grouped(items: list[str]) -> list[str]:
    """'A on D: why', 'B on D: why' -> 'A and B on D: why' (§7b: repeats summarised)."""
    by_why: dict[str, list[str]] = {}
    for item in items:
        where, sep, why = item.partition(": ")
        by_why.setdefault(why if sep else item, []).append(where if sep else "")
    lines = []
    for why, wheres in by_why.items():
        if not any(wheres):
            lines.append(why)
            continue
        days = {w.rpartition(" on ")[2] for w in wheres}
        if len(wheres) > 1 and len(days) == 1 and all(" on " in w for w in wheres):
            names = join_names([w.rpartition(" on ")[0] for w in wheres])
            lines.append(f"{names} on {days.pop()}: {why}")
        else:
            lines.append(f"{join_names(wheres)}: {why}")
    return lines


def _zero_in_doubt(progression: Progression, head: str, details: str, days: int) -> str | None:
    """Why a count of [0, 0] does not rule the patient out, if it does not: PET alone, a size
    rule alone, or another source showing progression in the same window (criteria.md §4)."""
    primary = progression.primary
    if primary is not None and primary.pet_only:
        return (
            f"{head}. PET alone never rules a patient out: conventional imaging needed."
            f"{details} {CHASE_IMAGING.format(days=days)}"
        )
    if progression.set_aside:
        return (
            f"{head}, but only because findings were set aside for their size; a size rule "
            f"alone never rules out.{details} Chase: the radiologist's reading of these "
            "lesions (radiology report)."
        )
    progressing = [s.text for s in progression.sources[1:] if s.low >= 1]
    if progressing:
        # contradictory evidence is ambiguous (criteria.md §1.1): never ruled out on it
        return (
            f"{head}, but {join_names(progressing)} shows progression in the same window."
            f"{details} Chase: the radiologist's lesion count on the most recent "
            "conventional imaging (radiology report or tumour-board form)."
        )
    return None


def _not_in_window(ctx: Context, progression: Progression, too_old_note: str = "") -> str:
    """'No imaging evidence of progression within 42 days before ...', naming what was set
    aside as too old."""
    days = ctx.params.imaging_window_days
    text = f"No imaging evidence of progression within {days} days before {ctx.as_of}"
    if progression.outside_window_text is not None:
        text += f"; set aside as too old: {progression.outside_window_text}{too_old_note}"
    return text + "."


def _conflict(ctx: Context, progression: Progression) -> str:
    limit = ctx.params.max_progressive_lesions
    names = join_names([s.text for s in progression.conflict])
    return (
        f"The evidence disagrees: {names} fall on different sides of {limit} progressive "
        f"lesions.{_details(progression)} Chase: the radiologist's lesion count on the most "
        "recent conventional imaging (radiology report or tumour-board form)."
    )


@criterion("oligoprogression", Kind.INCLUSION, reads=LESION_CONCEPTS)
def oligoprogression(ctx: Context) -> Decision:
    progression = find_progression(ctx)
    limit = ctx.params.max_progressive_lesions
    days = ctx.params.imaging_window_days
    evidence = tuple(progression.evidence)
    if not progression.sources:
        reason = _not_in_window(ctx, progression, " (new imaging needed)")
        reason += f"{_details(progression)} {CHASE_IMAGING.format(days=days)}"
        return Decision(Result.UNKNOWN, reason)
    if progression.conflict:
        return Decision(Result.UNKNOWN, _conflict(ctx, progression), evidence)
    head, details = _head(ctx, progression), _details(progression)
    low, high = progression.low, progression.high
    intracranial = progression.intracranial + progression.possibly_intracranial
    if intracranial and low <= limit:
        reason = (
            f"{head}. Intracranial involvement: {'; '.join(intracranial)}: the protocol counts "
            f"extracranial lesions only and excludes intracranial progression.{details} Chase: "
            "the brain imaging report, for the board."
        )
        return Decision(Result.UNKNOWN, reason, evidence)
    if low > limit:
        return Decision(Result.NOT_MET, f"{head}: more than {limit}.{details}", evidence)
    primary = progression.primary
    if high == 0:
        doubt = _zero_in_doubt(progression, head, details, days)
        if doubt:
            return Decision(Result.UNKNOWN, doubt, evidence)
        return Decision(Result.NOT_MET, f"{head}: no progression.{details}", evidence)
    if low >= 1 and high is not None and high <= limit:
        castration = progression.castration
        if castration is not None and not castration.established:
            reason = (
                f"{head}. Progression before castration is established: {castration.how}."
                f"{details} Chase: when did androgen deprivation start (urologist or GP letter, "
                "first injection date)?"
            )
            return Decision(Result.UNKNOWN, reason, evidence)
        under = f" under castration ({castration.how})" if castration is not None else ""
        return Decision(Result.MET, f"{head}: 1 to {limit}{under}.{details}", evidence)
    if primary is not None and primary.pet_only:
        action = (
            f"PET-only evidence: conventional imaging needed. {CHASE_IMAGING.format(days=days)}"
        )
    elif low == 0:
        action = (
            "No certain progressive lesion, only possible ones. Chase: the radiologist's reading "
            "of the possible lesions, or conventional imaging (radiology report)."
        )
    elif high is None:
        action = (
            "The exact number of progressive lesions is not recorded. Chase: the radiologist's "
            "lesion count (radiology report or tumour-board form)."
        )
    else:
        action = (
            f"The range straddles {limit}: possible lesions decide. Chase: the radiologist's "
            "reading of the possible lesions (radiology report)."
        )
    return Decision(Result.UNKNOWN, f"{head}.{details} {action}", evidence)


@criterion("polyprogression", Kind.EXCLUSION, reads=LESION_CONCEPTS)
def polyprogression(ctx: Context) -> Decision:
    progression = find_progression(ctx)
    limit = ctx.params.max_progressive_lesions
    evidence = tuple(progression.evidence)
    if not progression.sources:
        return Decision(Result.NOT_MET, _not_in_window(ctx, progression))
    if progression.conflict:
        return Decision(Result.UNKNOWN, _conflict(ctx, progression), evidence)
    head, details = _head(ctx, progression), _details(progression)
    if progression.low > limit:
        return Decision(Result.MET, f"{head}: more than {limit}.{details}", evidence)
    if progression.low + progression.unconfirmed_sites > limit:
        reason = (
            f"{head}: more than {limit} only with metastases recorded as unconfirmed, "
            f"provisional or differential diagnoses, which never decide.{details} Chase: the "
            "confirmation of these metastases (radiology or pathology report)."
        )
        return Decision(Result.UNKNOWN, reason, evidence)
    if progression.high is not None and progression.high <= limit:
        return Decision(Result.NOT_MET, f"{head}: not more than {limit}.{details}", evidence)
    # criteria.md defines `met` here only from a low above the limit; an open or straddling
    # range leaves oligoprogression `unknown`, which already puts the patient up for review.
    reason = (
        f"{head}: no count or lower bound above {limit} is recorded (oligoprogression needs "
        f"review for the exact count).{details}"
    )
    return Decision(Result.NOT_MET, reason, evidence)


@criterion(
    "progression-on-docetaxel",
    Kind.EXCLUSION,
    reads=LESION_CONCEPTS | {"docetaxel", MEDICATION_CONCEPT},
)
def progression_on_docetaxel(ctx: Context) -> Decision:
    progression = find_progression(ctx)
    placement = docetaxel_against(ctx, progression.day if progression.documented else None)
    evidence = tuple(placement.evidence)
    if not placement.records:
        return Decision(Result.NOT_MET, "No docetaxel recorded.")
    if not progression.documented or progression.day is None:
        reason = (
            f"Docetaxel recorded ({join_names(placement.records)}), but no progression evidence "
            "within the imaging window to place it against."
        )
        return Decision(Result.NOT_MET, reason, evidence)
    evidence += tuple(progression.evidence)
    when = f"the progression of {progression.day} ({progression.source()})"
    if placement.ongoing:
        reason = f"Docetaxel was ongoing on {when}: {join_names(placement.ongoing)}."
        return Decision(Result.MET, reason, evidence)
    if placement.unplaced:
        reason = (
            f"Docetaxel was given ({join_names(placement.unplaced)}) but its dates cannot be placed "
            f"against {when}. Chase: the docetaxel administration dates (day hospital or "
            "pharmacy)."
        )
        return Decision(Result.UNKNOWN, reason, evidence)
    reason = f"Docetaxel was not ongoing on {when}: {join_names(placement.not_ongoing)}."
    return Decision(Result.NOT_MET, reason, evidence)
