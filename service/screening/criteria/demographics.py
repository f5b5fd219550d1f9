"""age, sex and deceased: read from the Patient resource."""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import date

from service.screening.context import Context
from service.screening.criterion import Decide, criterion
from service.screening.decision import Decision, Evidence, Kind, Result
from service.screening.facts import Demographics

ADULT_AGE = 18
ADMIN = "Chase: the patient's demographic record (patient administration)."


def _age_on(born: date, day: date) -> int:
    return day.year - born.year - ((day.month, day.day) < (born.month, born.day))


def _from_patient(what: str) -> Callable[[Callable[[Context, Demographics], Decision]], Decide]:
    """Decides from a readable Patient resource; without one (none, or unreadable) the criterion
    is unknown and the reason says `what` cannot be read."""

    def wrap(decide: Callable[[Context, Demographics], Decision]) -> Decide:
        @functools.wraps(decide)
        def decide_if_readable(ctx: Context) -> Decision:
            patient = ctx.facts.patient
            if patient.problem:
                reason = f"Patient record: {patient.problem}; {what}. {ADMIN}"
                return Decision(Result.UNKNOWN, reason)
            return decide(ctx, patient)

        return decide_if_readable

    return wrap


def _patient_evidence(ctx: Context, summary: str) -> tuple[Evidence, ...]:
    return (Evidence(ctx.facts.patient.reference, summary),)


@criterion("age", Kind.INCLUSION)
@_from_patient("age cannot be read")
def age(ctx: Context, patient: Demographics) -> Decision:
    birth = patient.birth
    if birth is None:
        text = "No birth date recorded" if patient.birth_text is None else "Birth date unreadable"
        reason = f"{text}; age unknown. Chase: the birth date (patient administration)."
        return Decision(Result.UNKNOWN, reason, _patient_evidence(ctx, "Patient"))
    youngest = _age_on(birth.latest, ctx.as_of)
    oldest = _age_on(birth.earliest, ctx.as_of)
    shown = f"{youngest}" if youngest == oldest else f"{youngest} to {oldest}"
    evidence = _patient_evidence(ctx, f"birth date {birth.text}")
    partial = "" if birth.is_exact else f" (birth date recorded only as {birth.text})"
    head = f"Age {shown} on {ctx.as_of}{partial}"
    if youngest >= ADULT_AGE:
        return Decision(Result.MET, f"{head}: at least {ADULT_AGE}.", evidence)
    if oldest < ADULT_AGE:
        return Decision(Result.NOT_MET, f"{head}: under {ADULT_AGE}.", evidence)
    return Decision(
        Result.UNKNOWN,
        f"{head}: may be under {ADULT_AGE}. Chase: the full birth date (patient administration).",
        evidence,
    )


@criterion("sex", Kind.INCLUSION)
@_from_patient("sex cannot be read")
def sex(ctx: Context, patient: Demographics) -> Decision:
    gender = patient.gender
    evidence = _patient_evidence(ctx, f"administrative gender {gender or 'not recorded'}")
    if gender == "male":
        return Decision(Result.MET, "Administrative gender is male.", evidence)
    if gender is None:
        return Decision(
            Result.UNKNOWN,
            "Administrative gender not recorded. Chase: the gender in the patient record (patient administration).",
            evidence,
        )
    reason = (
        f"Administrative gender is recorded as {gender!r} (a prostate cancer patient may be "
        "recorded otherwise). Chase: check with the treating team."
    )
    return Decision(Result.UNKNOWN, reason, evidence)


@criterion("deceased", Kind.EXCLUSION)
@_from_patient("vital status unknown")
def deceased(ctx: Context, patient: Demographics) -> Decision:
    if patient.deceased_flag is True:
        return Decision(
            Result.MET, "Patient is recorded as deceased.", _patient_evidence(ctx, "deceased")
        )
    day = patient.deceased_day
    if day is None:
        return Decision(Result.NOT_MET, "No death recorded.")
    evidence = _patient_evidence(ctx, f"deceased {day}")
    if day.latest <= ctx.as_of:
        return Decision(Result.MET, f"Patient died on {day}, on or before {ctx.as_of}.", evidence)
    if day.earliest > ctx.as_of:
        return Decision(Result.NOT_MET, f"Death recorded on {day}, after {ctx.as_of}.", evidence)
    return Decision(
        Result.UNKNOWN,
        f"Death recorded as {day}: may be before {ctx.as_of}. Chase: the date of death (patient administration).",
        evidence,
    )
