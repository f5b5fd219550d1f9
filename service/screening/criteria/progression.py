"""oligoprogression, polyprogression and progression-on-docetaxel (criteria.md §3, §4)."""

from __future__ import annotations

from service.screening.context import Context, join_names
from service.screening.lesions import Progression, find_progression
from service.screening.result import Decision, Result
from service.screening.therapy import docetaxel_against


def _notes(progression: Progression) -> str:
    return f" Notes: {'; '.join(progression.notes)}." if progression.notes else ""


def _no_evidence(ctx: Context, progression: Progression) -> str:
    days = ctx.params.imaging_window_days
    text = f"No imaging evidence of progression within {days} days before {ctx.as_of}"
    if progression.latest_outside_window is not None:
        text += f"; the latest evidence, on {progression.latest_outside_window}, is older"
    return text + "."


def _counted(progression: Progression) -> str:
    """'2 progressive extracranial lesions (lesion-count observation on 2026-11-10)'."""
    if progression.exact is not None:
        n = progression.exact
        what = f"{n} progressive extracranial lesion{'s' if n != 1 else ''}"
    elif progression.lower_bound is not None:
        n = progression.lower_bound
        what = f"at least {n} new metastatic site{'s' if n != 1 else ''} (a lower bound)"
    else:
        what = "progression documented without a lesion count"
    text = f"{what} ({progression.source()})"
    if progression.intracranial:
        text += f", and {progression.intracranial} progressive intracranial lesion(s)"
    if progression.unclear_site:
        text += f", and {progression.unclear_site} lesion(s) in the nervous system, possibly intracranial"
    return text


def oligoprogression(ctx: Context) -> Decision:
    progression = find_progression(ctx)
    limit = ctx.params.max_progressive_lesions
    days = ctx.params.imaging_window_days
    evidence = tuple(progression.evidence)
    if progression.representation is None:
        return Decision(Result.UNKNOWN, _no_evidence(ctx, progression))
    head = _counted(progression)[0].upper() + _counted(progression)[1:]
    window = f"within {days} days"
    notes = _notes(progression)
    if progression.intracranial or progression.unclear_site:
        reason = f"{head}: the protocol counts extracranial lesions only; review.{notes}"
        return Decision(Result.UNKNOWN, reason, evidence)
    if progression.exact is not None:
        if progression.exact == 0:
            return Decision(Result.NOT_MET, f"{head} {window}: no progression.{notes}", evidence)
        if progression.exact <= limit:
            return Decision(Result.MET, f"{head} {window}: 1 to {limit}.{notes}", evidence)
        return Decision(Result.NOT_MET, f"{head} {window}: more than {limit}.{notes}", evidence)
    if progression.lower_bound is not None:
        if progression.lower_bound > limit:
            return Decision(Result.NOT_MET, f"{head} {window}: more than {limit}.{notes}", evidence)
        reason = (
            f"{head} {window}: the exact number of progressive lesions is not recorded; review."
        )
        return Decision(Result.UNKNOWN, reason + notes, evidence)
    reason = f"{head} {window}: the number of progressive lesions is not recorded; review."
    return Decision(Result.UNKNOWN, reason + notes, evidence)


def polyprogression(ctx: Context) -> Decision:
    progression = find_progression(ctx)
    limit = ctx.params.max_progressive_lesions
    days = ctx.params.imaging_window_days
    evidence = tuple(progression.evidence)
    if progression.representation is None:
        return Decision(Result.NOT_MET, _no_evidence(ctx, progression))
    head = _counted(progression)[0].upper() + _counted(progression)[1:]
    notes = _notes(progression)
    count = progression.exact if progression.exact is not None else progression.lower_bound
    if count is not None and count > limit:
        return Decision(
            Result.MET, f"{head} within {days} days: more than {limit}.{notes}", evidence
        )
    if progression.exact is not None:
        reason = f"{head} within {days} days: not more than {limit}.{notes}"
        return Decision(Result.NOT_MET, reason, evidence)
    # criteria.md defines only `met` here (an exact count or lower bound above the limit); a
    # missing count, or a lower bound within the limit, leaves oligoprogression `unknown`,
    # which already puts the patient up for review.
    reason = (
        f"{head} within {days} days: no count or lower bound above {limit} is recorded "
        f"(oligoprogression needs review for the exact count).{notes}"
    )
    return Decision(Result.NOT_MET, reason, evidence)


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
    when = f"the progression evidence of {progression.day} ({progression.source()})"
    if placement.ongoing:
        reason = f"Docetaxel was ongoing on {when}: {join_names(placement.ongoing)}."
        return Decision(Result.MET, reason, evidence)
    if placement.unplaced:
        reason = (
            f"Docetaxel was given ({join_names(placement.unplaced)}) but its dates cannot be placed "
            f"against {when}; review."
        )
        return Decision(Result.UNKNOWN, reason, evidence)
    reason = f"Docetaxel was not ongoing on {when}: {join_names(placement.not_ongoing)}."
    return Decision(Result.NOT_MET, reason, evidence)
