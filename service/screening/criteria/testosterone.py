"""castrate-testosterone and testosterone-above-castrate: the same measurement, two questions."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from service.screening.context import Context, join_names, most_recent_first, once_per_screen
from service.screening.criterion import criterion
from service.screening.decision import Decision, Evidence, Kind, Result
from service.screening.facts import ClinicalFact
from service.screening.nearmiss import near_miss_note
from service.screening.therapy import is_ongoing
from service.screening.units import (
    Measured,
    UnreadableValue,
    castrate_readings,
    is_above_castrate,
    is_castrate,
    read_measurement,
)

TESTOSTERONE_CONCEPTS = frozenset({"testosterone-total"})

REPEAT = (
    "Chase: a total testosterone with its value and unit in ng/dL or nmol/L (hospital laboratory)."
)


@dataclass
class TestosteroneFinding:
    """The most recent total testosterone within the window, and what was passed over."""

    latest: ClinicalFact | None = None
    measured: Measured | None = None
    problem: str | None = None
    last_outside_window: ClinicalFact | None = None
    passed_over: list[str] = field(default_factory=list)
    # an earlier castrate value in the window (for a discordant rise on ADT, criteria.md §5)
    earlier_castrate: tuple[ClinicalFact, Measured] | None = None


@once_per_screen
def find_testosterone(ctx: Context) -> TestosteroneFinding:
    """The total testosterone both testosterone criteria read, worked out once per screen."""
    finding = TestosteroneFinding()
    days = ctx.params.testosterone_window_days
    for fact in most_recent_first(ctx.facts.observations_of("testosterone-not-total")):
        if ctx.in_window(fact.day, days) and not fact.has("testosterone-total"):
            finding.passed_over.append(f"{fact.label} on {fact.day} is not total testosterone")
    for fact in most_recent_first(ctx.facts.observations_of("testosterone-total")):
        if fact.status not in ctx.params.observation_statuses_used:
            if ctx.in_window(fact.day, days):
                finding.passed_over.append(
                    f"a {fact.status} result{_value_of(ctx, fact)} on {fact.day} was not used"
                )
            continue
        if not ctx.in_window(fact.day, days):
            if finding.last_outside_window is None:
                finding.last_outside_window = fact
            continue
        try:
            measured = read_measurement(fact.resource, ctx.mappings)
        except UnreadableValue as exc:
            finding.latest, finding.problem = fact, str(exc)
            break
        if measured is None:
            finding.passed_over.append(f"a result on {fact.day} has no value")
            continue
        finding.latest, finding.measured = fact, measured
        if measured.ng_dl is None:
            finding.problem = f"unit {measured.unit!r} cannot be converted to ng/dL"
        break
    if finding.measured is not None and finding.latest is not None:
        finding.earlier_castrate = _earlier_castrate(ctx, finding.latest)
    return finding


def _earlier_castrate(ctx: Context, latest: ClinicalFact) -> tuple[ClinicalFact, Measured] | None:
    """The most recent castrate value in the window before the latest one, if any."""
    days = ctx.params.testosterone_window_days
    earlier_in_window = (
        fact
        for fact in most_recent_first(ctx.facts.observations_of("testosterone-total"))
        if fact is not latest
        and fact.day is not None
        and latest.day is not None
        and fact.day.earliest < latest.day.earliest
        and ctx.in_window(fact.day, days)
    )
    return next(castrate_readings(ctx, earlier_in_window), None)


def _on_adt(ctx: Context) -> bool:
    """Androgen deprivation ongoing at as_of (the systemic-therapy reading, §3)."""
    if any(f.status == "completed" for f in ctx.facts.procedures_of("orchiectomy-bilateral")):
        return True
    return any(is_ongoing(m, ctx.as_of, ctx.params) for m in ctx.facts.medications_of("gnrh"))


def _near_threshold(ctx: Context, finding: TestosteroneFinding) -> str | None:
    """Why a value at or just across the threshold is ambiguous (criteria.md §5, medcare-2):
    'at' (exactly 50 ng/dL), 'rose' (above 50 on ADT after one below 50 in the window)."""
    measured, threshold = finding.measured, ctx.params.castrate_ng_dl
    if measured is None or measured.ng_dl is None or measured.comparator:
        return None
    if round(measured.ng_dl, 1) == threshold:
        return "at"
    if measured.ng_dl > threshold and finding.earlier_castrate and _on_adt(ctx):
        return "rose"
    return None


def _threshold_reason(ctx: Context, finding: TestosteroneFinding, head: str, kind: str) -> str:
    limit = f"{ctx.params.castrate_ng_dl:g} ng/dL"
    if kind == "at":
        return (
            f"{head}: at the threshold of {limit}, within any assay's error. Chase: a repeat "
            "total testosterone, preferably by LC-MS/MS (the hospital laboratory)."
            + _context_notes(finding)
        )
    assert finding.earlier_castrate is not None and finding.measured is not None
    before, value = finding.earlier_castrate
    return (
        f"{head}: rose from {value.describe()} on {before.day} to {finding.measured.describe()} "
        "while on androgen deprivation; a single discordant value is ambiguous. Chase: a repeat "
        "total testosterone, and the last ADT injection date (GP, urologist or home nurse)."
        + _context_notes(finding)
    )


def _describe_latest(finding: TestosteroneFinding) -> str:
    assert finding.latest is not None
    fact = finding.latest
    value = finding.measured.describe() if finding.measured else "a value"
    text = f"Total testosterone {value} on {fact.day}"
    if finding.measured and finding.measured.unit_from == "unit":
        text += " (unit read from the 'unit' text because the UCUM code is absent)"
    return text


def _context_notes(finding: TestosteroneFinding) -> str:
    notes = f" Also seen: {join_names(finding.passed_over)}." if finding.passed_over else ""
    return notes


def _no_result(ctx: Context, finding: TestosteroneFinding) -> str:
    days = ctx.params.testosterone_window_days
    text = f"No final total testosterone within {days} days before {ctx.as_of}"
    if finding.last_outside_window is not None:
        last = finding.last_outside_window
        text += f"; the last one{_value_of(ctx, last)} was on {last.day}{_days_ago(ctx, last)}"
    return text + "." + _context_notes(finding)


def _value_of(ctx: Context, fact: ClinicalFact) -> str:
    """', 18 ng/dL,' for a result set aside (criteria.md §7b: what was set aside, with its
    value); '' when it has none that can be read."""
    try:
        measured = read_measurement(fact.resource, ctx.mappings)
    except UnreadableValue:
        return ""
    return f", {measured.describe()}," if measured is not None else ""


def _days_ago(ctx: Context, fact: ClinicalFact) -> str:
    return f" ({(ctx.as_of - fact.day.earliest).days} days before)" if fact.day else ""


Evidences = tuple[Evidence, ...]
# What a criterion says when the latest result in the window can be compared with the threshold:
# (ctx, finding, head of the reason, its evidence, the threshold in words) -> its decision.
Question = Callable[[Context, TestosteroneFinding, str, Evidences, str], Decision]


def _ask(
    ctx: Context, question: Question, none: Callable[[Context, TestosteroneFinding], Decision]
) -> Decision:
    """The same measurement, two questions: a missing result (`none`) and a latest result that
    cannot be compared with the threshold are answered here, the comparison by `question`."""
    finding = find_testosterone(ctx)
    if finding.latest is None:
        return none(ctx, finding)
    days = ctx.params.testosterone_window_days
    head = f"{_describe_latest(finding)} (most recent within {days} days)"
    evidence = (finding.latest.evidence,)
    if finding.problem or finding.measured is None or finding.measured.ng_dl is None:
        return _repeat(f"{head}: {finding.problem}.", finding, evidence)
    return question(ctx, finding, head, evidence, f"{ctx.params.castrate_ng_dl:g} ng/dL")


def _repeat(reason: str, finding: TestosteroneFinding, evidence: Evidences) -> Decision:
    """`unknown`: the latest result cannot be compared with the threshold; ask for a repeat."""
    return Decision(Result.UNKNOWN, f"{reason}{_context_notes(finding)} {REPEAT}", evidence)


@criterion("castrate-testosterone", Kind.INCLUSION, reads=TESTOSTERONE_CONCEPTS)
def castrate_testosterone(ctx: Context) -> Decision:
    return _ask(ctx, _below_threshold, _none_to_judge)


def _none_to_judge(ctx: Context, finding: TestosteroneFinding) -> Decision:
    days = ctx.params.testosterone_window_days
    evidence = (finding.last_outside_window.evidence,) if finding.last_outside_window else ()
    reason = (
        _no_result(ctx, finding)
        + near_miss_note(ctx, "castrate-testosterone", days)
        + f" Chase: a total testosterone from the last {days} days (hospital laboratory or GP)."
    )
    return Decision(Result.UNKNOWN, reason, evidence)


def _below_threshold(
    ctx: Context, finding: TestosteroneFinding, head: str, evidence: Evidences, limit: str
) -> Decision:
    assert finding.measured is not None
    near = _near_threshold(ctx, finding)
    if near:
        return Decision(Result.UNKNOWN, _threshold_reason(ctx, finding, head, near), evidence)
    castrate = is_castrate(finding.measured, ctx.params.castrate_ng_dl)
    if castrate is None:
        return _repeat(f"{head} does not show whether it is below {limit}.", finding, evidence)
    if castrate:
        return Decision(Result.MET, f"{head}, below {limit}." + _context_notes(finding), evidence)
    reason = f"{head}, not below {limit}: not castrate." + _context_notes(finding)
    return Decision(Result.NOT_MET, reason, evidence)


@criterion("testosterone-above-castrate", Kind.EXCLUSION, reads=TESTOSTERONE_CONCEPTS)
def testosterone_above_castrate(ctx: Context) -> Decision:
    return _ask(ctx, _above_threshold, lambda c, f: Decision(Result.NOT_MET, _no_result(c, f)))


def _above_threshold(
    ctx: Context, finding: TestosteroneFinding, head: str, evidence: Evidences, limit: str
) -> Decision:
    assert finding.measured is not None
    near = _near_threshold(ctx, finding)
    if near == "rose" and finding.earlier_castrate:
        both = (*evidence, finding.earlier_castrate[0].evidence)
        return Decision(Result.UNKNOWN, _threshold_reason(ctx, finding, head, near), both)
    if near == "at":
        reason = f"{head}: at the threshold of {limit}, not above it." + _context_notes(finding)
        return Decision(Result.NOT_MET, reason, evidence)
    above = is_above_castrate(finding.measured, ctx.params.castrate_ng_dl)
    if above is None:
        return _repeat(f"{head} does not show whether it is above {limit}.", finding, evidence)
    if above:
        return Decision(Result.MET, f"{head}, above {limit}." + _context_notes(finding), evidence)
    return Decision(
        Result.NOT_MET, f"{head}, not above {limit}." + _context_notes(finding), evidence
    )
