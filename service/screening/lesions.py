"""Progressive lesions as a count range [low, high] (criteria.md §4, medcare-2).

Four representations, each read on its own, then weighed:
1. a lesion-count observation: [n, n] (a count made on PET is itself possible: [0, n]);
2. lesion-level findings of every exam in the window, combined by site: [certain,
   certain + possible] (possible: PET, flare, size, unknown location, unmatched across exams);
3. a disease status "worsened": [1, open] (not when it rests on laboratory results only);
4. new metastasis Conditions, counted by organ or node region: [certain sites, open] (an onset
   in the window is certain, a recordedDate alone possible).
The primary evidence is the first present in the order 1, 2, then 3 and 4 together (low is the
larger of the two). No representation hides another: sources that fall on different sides of
the limit are a conflict, and a progressive intracranial lesion from any of them is reported.

Only evidence dated within the imaging window (42 days before as_of) is used. The helpers at the
end (prostate_metastases, spinal sites, ...) are for every criterion that reads metastases.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta

from service.fhir.dates import FhirDay, parse_fhir_day
from service.screening.bodysites import (
    BONE,
    CLASS_WORDS,
    INTRACRANIAL,
    POSSIBLY_INTRACRANIAL,
    REGION_WEIGHT,
    UNKNOWN,
    Site,
    classify,
    condition_site,
    is_metastasis_condition,
    is_prostate_metastasis,
    is_unconfirmed,
    other_primary,
    unknown_site,
    verification,
)
from service.screening.context import Context, join_names, most_recent_first
from service.screening.decision import Evidence
from service.screening.facts import ClinicalFact
from service.screening.imaging import (
    Castration,
    Modality,
    castration_at,
    flare_start,
    lab_only_status,
    modality_of,
)
from service.screening.sizes import POSSIBLE, SET_ASIDE, judge, read_size

__all__ = [
    "Progression",
    "Source",
    "bone_metastases_without_site",
    "condition_site",
    "find_progression",
    "finding_site",
    "is_prostate_metastasis",
    "is_unconfirmed",
    "localization",
    "metastases_stratum",
    "other_primary",
    "prostate_findings",
    "prostate_metastases",
    "recorded_site_classes",
    "site_of",
    "spinal_metastasis_sites",
    "verification",
]  # fmt: skip

COUNT, FINDINGS, DISEASE_STATUS, CONDITIONS = "count", "findings", "disease-status", "conditions"
STATUS_AND_CONDITIONS = "disease-status-and-conditions"
REPRESENTATION_NAMES = {
    COUNT: "lesion-count observation",
    FINDINGS: "lesion-level imaging findings",
    DISEASE_STATUS: "disease-status observation",
    CONDITIONS: "new metastasis conditions",
    STATUS_AND_CONDITIONS: "disease status and new metastasis conditions",
}
_ACTIVE_OR_UNSET = {None, "active", "recurrence", "relapse"}
# Evidence older than the window but at most this old is named in the reason as set aside.
RECENT_OUTSIDE_WINDOW_DAYS = 365


@dataclass
class Source:
    """One representation's range, and what it rests on (for the reason and the conflict)."""

    kind: str
    low: int
    high: int | None  # None: open
    day: FhirDay | None  # date of the evidence (latest exam / count / status)
    text: str  # 'lesion count of 2 on 2026-11-10 (CT)'
    evidence: list[Evidence] = field(default_factory=list)
    pet_only: bool = False
    progression_day: date | None = None  # earliest certain progression in it
    modality: str | None = None


@dataclass
class Progression:
    """The count range of progressive extracranial lesions in the window, and its caveats."""

    representation: str | None = None  # the primary evidence
    low: int = 0
    high: int | None = 0
    sources: list[Source] = field(default_factory=list)
    conflict: list[Source] = field(default_factory=list)
    intracranial: list[str] = field(default_factory=list)  # progressive intracranial lesions
    possibly_intracranial: list[str] = field(default_factory=list)
    possible: list[str] = field(default_factory=list)  # possible lesions, with why
    set_aside: list[str] = field(default_factory=list)  # not lesions (size), with the value
    no_size: list[str] = field(default_factory=list)
    unconfirmed: list[str] = field(default_factory=list)
    unconfirmed_sites: int = 0  # regions only unconfirmed Conditions name (never decide)
    other_primary: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    evidence: list[Evidence] = field(default_factory=list)
    day: FhirDay | None = None  # the progression date (certain progression only)
    castration: Castration | None = None
    latest_outside_window: FhirDay | None = None
    outside_window_text: str | None = None

    @property
    def documented(self) -> bool:
        """Certain progression is documented in the window (it then has a progression date)."""
        return self.day is not None

    @property
    def exact(self) -> int | None:
        return self.low if self.high == self.low else None

    @property
    def primary(self) -> Source | None:
        return next((s for s in self.sources if s.kind == self.representation), None)

    def source(self) -> str:
        primary = self.primary
        return primary.text if primary else "no evidence"


# -- the window ----------------------------------------------------------------------------------


def find_progression(ctx: Context) -> Progression:
    """The count range in the window, worked out once per screen (three criteria and the
    strata read it)."""
    if ctx.progression is None:
        ctx.progression = _progression_of(ctx)
    return ctx.progression


def _progression_of(ctx: Context) -> Progression:
    days = ctx.params.imaging_window_days
    facts = ctx.facts
    candidates = (
        facts.observations_of("lesion-count")
        + facts.observations_of("imaging-lesion")
        + facts.observations_of("disease-status")
    )
    usable = [f for f in candidates if f.status in ctx.params.observation_statuses_used]
    in_window = [f for f in usable if ctx.in_window(f.day, days)]
    progression = Progression()
    sources = [
        _from_counts(ctx, progression, [f for f in in_window if f.has("lesion-count")]),
        _from_findings(ctx, progression, [f for f in in_window if f.has("imaging-lesion")]),
        _from_status_and_conditions(
            ctx, progression, [f for f in in_window if f.has("disease-status")], days
        ),
    ]
    progression.sources = [s for s in sources if s is not None]
    _weigh(ctx, progression)
    if not progression.sources:
        _outside_window(ctx, progression, usable, days)
    return progression


def _weigh(ctx: Context, progression: Progression) -> None:
    limit = ctx.params.max_progressive_lesions
    if not progression.sources:
        return
    primary = progression.sources[0]
    progression.representation = primary.kind
    progression.low, progression.high = primary.low, primary.high
    for source in progression.sources:
        progression.evidence.extend(e for e in source.evidence if e not in progression.evidence)
    at_most = [s for s in progression.sources if s.high is not None and s.high <= limit]
    above = [s for s in progression.sources if s.low > limit]
    if at_most and above:
        progression.conflict = at_most + above
    if primary.progression_day is not None:
        progression.day = FhirDay(
            primary.progression_day, primary.progression_day, primary.progression_day.isoformat()
        )
        progression.castration = castration_at(ctx, primary.progression_day)


def _outside_window(
    ctx: Context, progression: Progression, usable: list[ClinicalFact], days: int
) -> None:
    older = [f for f in usable if f.day is not None and not ctx.in_window(f.day, days)]
    older += [
        f for f in ctx.facts.conditions
        if f.day is not None and is_prostate_metastasis(ctx, f) and not ctx.in_window(f.day, days)
        and f.day.earliest <= ctx.as_of
    ]  # fmt: skip
    if not older:
        return
    latest = max(older, key=lambda f: f.day.earliest if f.day else date.min)
    assert latest.day is not None
    if (ctx.as_of - latest.day.earliest).days > RECENT_OUTSIDE_WINDOW_DAYS:
        return  # years-old evidence is history, not "just outside the window" (§7b)
    progression.latest_outside_window = latest.day
    ago = (ctx.as_of - latest.day.earliest).days
    what = latest.label
    if latest.has("lesion-count") and isinstance(latest.resource.get("valueInteger"), int):
        n = latest.resource["valueInteger"]
        what = f"{n} progressive lesion{'s' if n != 1 else ''}"
    progression.outside_window_text = f"{what} on {latest.day}, {ago} days ago"


# -- 1. a lesion-count observation ---------------------------------------------------------------


def _from_counts(
    ctx: Context, progression: Progression, counts: list[ClinicalFact]
) -> Source | None:
    for fact in most_recent_first(counts):
        exact, lower = _count_value(fact.resource)
        if exact is None and lower is None:
            progression.notes.append(
                f"a lesion-count observation on {fact.day} has no usable count"
            )
            continue
        modality = modality_of(ctx, fact)
        for component in fact.resource.get("component") or []:
            if ctx.mappings.vs("lesion-count-intracranial").matches(component.get("code")):
                n = _count_value(component)[0] or _count_value(component)[1] or 0
                if n:
                    progression.intracranial.append(
                        f"{n} progressive intracranial lesion{'s' if n != 1 else ''} in the "
                        f"lesion count of {fact.day}"
                    )
        low, high = (exact, exact) if exact is not None else (lower or 0, None)
        what = (
            f"lesion count of {exact}" if exact is not None else f"lesion count of at least {lower}"
        )
        on = _on(fact.day, modality)
        if modality.pet:
            progression.possible.append(
                f"the {what} was made on PET ({modality.name}): its lesions are possible only"
            )
            low = 0
        certain_day = fact.day.earliest if fact.day and low >= 1 else None
        return Source(
            COUNT, low, high, fact.day, f"{what} {on}", [fact.evidence],
            pet_only=modality.pet, progression_day=certain_day, modality=modality.name,
        )  # fmt: skip
    return None


def _count_value(holder: dict[str, object]) -> tuple[int | None, int | None]:
    """(exact, lower bound) from valueInteger, or valueQuantity with an optional comparator."""
    value = holder.get("valueInteger")
    if isinstance(value, int) and not isinstance(value, bool):
        return value, None
    quantity = holder.get("valueQuantity")
    if isinstance(quantity, dict) and isinstance(quantity.get("value"), int | float):
        number = int(quantity["value"])
        comparator = quantity.get("comparator")
        if comparator == ">=":
            return None, number
        if comparator == ">":
            return None, number + 1
        if comparator is None:
            return number, None
    return None, None


def _on(day: FhirDay | None, modality: Modality) -> str:
    how = modality.name or "imaging, modality not stated"
    return f"on {day} ({how})" if day else f"({how}, no date)"


# -- 2. lesion-level findings --------------------------------------------------------------------


@dataclass
class _Lesion:
    site: Site
    exam: date
    certain: bool
    why: str  # why it is only possible ('' when certain)


def site_of(ctx: Context, fact: ClinicalFact) -> Site:
    """The site of a finding or a metastasis Condition."""
    if fact.resource_type == "Condition":
        return condition_site(ctx, fact)
    return finding_site(ctx, fact)


def prostate_findings(ctx: Context) -> list[ClinicalFact]:
    """Lesion-level findings (any date, usable status) not about another cancer (focus)."""
    return [
        f
        for f in ctx.facts.observations_of("imaging-lesion")
        if f.status in ctx.params.observation_statuses_used and other_primary(ctx, f) is None
    ]


def finding_site(ctx: Context, fact: ClinicalFact) -> Site:
    """Where a lesion-level finding is (unknown location when nothing classifies its site)."""
    body_site = fact.resource.get("bodySite")
    return classify(ctx, body_site) or unknown_site(body_site)


def _from_findings(
    ctx: Context, progression: Progression, findings: list[ClinicalFact]
) -> Source | None:
    if not findings:
        return None
    vs = ctx.mappings.vs
    lesions: list[_Lesion] = []
    exams: set[date] = set()
    modalities: set[str] = set()
    all_pet = True
    evidence: list[Evidence] = []
    for fact in sorted(
        findings, key=lambda f: (f.day.earliest if f.day else date.min, f.evidence.order_key)
    ):
        assert fact.day is not None  # in the window, so dated
        other = other_primary(ctx, fact)
        if other is not None:  # Observation.focus on another cancer (MII): not a prostate lesion
            progression.other_primary.append(
                f"a finding on {fact.day} ({site_of(ctx, fact).name}) is about {other.label}"
            )
            continue
        exam = fact.day.earliest
        exams.add(exam)
        value = fact.resource.get("valueCodeableConcept")
        modality = modality_of(ctx, fact)
        all_pet = all_pet and modality.pet
        modalities.add(modality.name or "modality not stated")
        if vs("lesion-stable").matches(value) or vs("lesion-regressing").matches(value):
            evidence.append(fact.evidence)
            continue
        if not (vs("lesion-new").matches(value) or vs("lesion-progressive").matches(value)):
            # it may be new or progressive: a possible lesion, never a reason for [0, 0]
            site = finding_site(ctx, fact)
            evidence.append(fact.evidence)
            why = f"{site.name} on {fact.day}: its value (new, progressive, stable?) is not recognised"
            lesions.append(_Lesion(site, exam, False, why))
            continue
        evidence.append(fact.evidence)
        site = finding_site(ctx, fact)
        where = f"{site.name} on {fact.day}"
        if site.klass == INTRACRANIAL:
            progression.intracranial.append(f"intracranial lesion ({where})")
            continue
        if site.klass == POSSIBLY_INTRACRANIAL:
            progression.possibly_intracranial.append(
                f"{site.name} ({CLASS_WORDS[site.klass]}) on {fact.day}"
            )
        if site.klass == UNKNOWN:
            lesions.append(
                _Lesion(
                    site,
                    exam,
                    False,
                    f"{where}: location not classified (site code {site.code}); map it in mappings/body-sites.yaml",
                )
            )
            continue
        if modality.pet:
            lesions.append(
                _Lesion(
                    site,
                    exam,
                    False,
                    f"{where}: seen on PET ({modality.name}), not conventional imaging",
                )
            )
            continue
        verdict = judge(ctx, site, read_size(ctx, fact))
        if verdict.outcome == SET_ASIDE:
            progression.set_aside.append(f"{site.name} on {fact.day} ({verdict.why})")
            continue
        if verdict.outcome == POSSIBLE:
            lesions.append(_Lesion(site, exam, False, f"{where}: {verdict.why}"))
            continue
        if verdict.why == "no size recorded":
            progression.no_size.append(where)
        start = flare_start(ctx, exam) if site.klass == BONE else None
        if start is not None:
            lesions.append(
                _Lesion(
                    site,
                    exam,
                    False,
                    f"{where}: bone lesion within 12 weeks of starting {start.what} on {start.day}, possibly a flare until a later scan confirms it",
                )
            )
            continue
        sure = site.klass != POSSIBLY_INTRACRANIAL
        lesions.append(_Lesion(site, exam, sure, "" if sure else f"{where}: possibly intracranial"))
    certain, possible, matched_note = _combine(lesions, len(exams))
    # a possible lesion matched to a certain one at the same site is that lesion: not listed
    confirmed = _matched_certain_keys(lesions)
    progression.possible.extend(
        lesion.why for lesion in lesions if not lesion.certain and lesion.site.key not in confirmed
    )
    if matched_note:
        progression.notes.append(matched_note)
    latest = max(exams)
    certain_days = [lesion.exam for lesion in lesions if lesion.certain]
    exam_list = join_names(sorted(d.isoformat() for d in exams))
    how = join_names(sorted(modalities))
    text = f"imaging findings on {exam_list} ({how})"
    return Source(
        FINDINGS, certain, certain + possible, FhirDay(latest, latest, latest.isoformat()), text,
        evidence, pet_only=all_pet, progression_day=min(certain_days, default=None),
        modality=how,
    )  # fmt: skip


def _matched_certain_keys(lesions: list[_Lesion]) -> set[str]:
    """Sites with at most one lesion per exam and a certain one on some exam."""
    per_key_exam: dict[tuple[str, date], int] = {}
    for lesion in lesions:
        per_key_exam[(lesion.site.key, lesion.exam)] = (
            per_key_exam.get((lesion.site.key, lesion.exam), 0) + 1
        )
    ambiguous = {key for (key, _exam), n in per_key_exam.items() if n > 1}
    return {x.site.key for x in lesions if x.certain and x.site.key not in ambiguous}


def _combine(lesions: list[_Lesion], exams: int) -> tuple[int, int, str]:
    """(certain, possible) over exams, matched by site (class and body-structure code).

    A site with at most one lesion on each exam is matched across exams: one lesion, certain
    if any exam made it certain. Where an exam has several lesions at the same site code they
    cannot be matched: the count runs from the largest single exam to the sum of all exams
    (criteria.md §4 item 2)."""
    by_key: dict[str, list[_Lesion]] = {}
    for lesion in lesions:
        by_key.setdefault(lesion.site.key, []).append(lesion)
    certain = possible = 0
    unmatched = False
    for group in by_key.values():
        per_exam: dict[date, list[_Lesion]] = {}
        for lesion in group:
            per_exam.setdefault(lesion.exam, []).append(lesion)
        if all(len(on_exam) == 1 for on_exam in per_exam.values()):
            if any(lesion.certain for lesion in group):
                certain += 1
            else:
                possible += 1
            continue
        largest = max(sum(1 for x in on_exam if x.certain) for on_exam in per_exam.values())
        certain += largest
        possible += len(group) - largest
        unmatched = unmatched or len(per_exam) > 1
    note = (
        f"lesions at the same site code on {exams} exams cannot be matched one to one, so their "
        "count runs from the largest exam to the sum of all exams"
        if unmatched
        else ""
    )
    return certain, possible, note


# -- 3 and 4: disease status and new metastasis Conditions ---------------------------------------


def _from_status_and_conditions(
    ctx: Context, progression: Progression, statuses: list[ClinicalFact], days: int
) -> Source | None:
    status = _from_disease_status(ctx, progression, statuses)
    conditions = _from_conditions(ctx, progression, days)
    if status is None and conditions is None:
        return None
    if status is None or conditions is None:
        return status or conditions
    days_known = [d for d in (status.progression_day, conditions.progression_day) if d]
    return Source(
        STATUS_AND_CONDITIONS, max(status.low, conditions.low), None,
        max((s.day for s in (status, conditions) if s.day), key=lambda d: d.earliest, default=None),
        f"{status.text} and {conditions.text}", status.evidence + conditions.evidence,
        progression_day=min(days_known, default=None),
    )  # fmt: skip


def _from_disease_status(
    ctx: Context, progression: Progression, statuses: list[ClinicalFact]
) -> Source | None:
    worsened: list[ClinicalFact] = []
    for fact in statuses:
        value = fact.resource.get("valueCodeableConcept")
        if value is None:
            progression.notes.append(
                f"a disease-status observation on {fact.day} has no value (progression not "
                "documented by it)"
            )
            continue
        if not ctx.mappings.vs("disease-worsened").matches(value):
            continue
        if lab_only_status(ctx, fact.resource):
            progression.notes.append(
                f"a 'worsened' disease status on {fact.day} rests on laboratory results only "
                "(a PSA rise), not imaging: not counted"
            )
            continue
        worsened.append(fact)
    if not worsened:
        return None
    first = min(worsened, key=lambda f: f.day.earliest if f.day else date.max)
    assert first.day is not None
    return Source(
        DISEASE_STATUS, 1, None, first.day,
        f"disease status 'worsened' on {first.day} (no lesion count)",
        [f.evidence for f in worsened], progression_day=first.day.earliest,
    )  # fmt: skip


def _from_conditions(ctx: Context, progression: Progression, days: int) -> Source | None:
    certain_regions: dict[str, str] = {}
    possible_regions: dict[str, str] = {}
    unconfirmed_regions: dict[str, str] = {}
    onsets: list[date] = []
    evidence: list[Evidence] = []
    metastases = find_metastases(ctx)
    progression.other_primary.extend(metastases.other_primary)
    for fact, site in metastases.sites:
        onset = _onset(fact)
        recorded = parse_fhir_day(fact.resource.get("recordedDate"))
        onset_in = onset is not None and ctx.in_window(onset, days)
        recorded_in = recorded is not None and ctx.in_window(recorded, days)
        if not (onset_in or recorded_in):
            continue
        evidence.append(fact.evidence)
        name = f"{fact.label} ({CLASS_WORDS[site.klass]})"
        if is_unconfirmed(fact):
            progression.unconfirmed.append(f"{fact.label}, recorded as {verification(fact)}")
            if onset_in and site.extracranial:
                unconfirmed_regions.setdefault(site.region, name)
            elif site.klass in (INTRACRANIAL, POSSIBLY_INTRACRANIAL):
                # it never decides, but it may be intracranial: oligoprogression is not `met`
                progression.possibly_intracranial.append(
                    f"{fact.label}, recorded as {verification(fact)}"
                )
            continue
        if site.klass == INTRACRANIAL:
            if onset_in:
                progression.intracranial.append(
                    f"new intracranial metastasis: {fact.label} (onset {onset})"
                )
            else:
                progression.possibly_intracranial.append(f"{fact.label}, recorded {recorded}")
            continue
        if site.klass == POSSIBLY_INTRACRANIAL:
            progression.possibly_intracranial.append(f"{fact.label} ({CLASS_WORDS[site.klass]})")
        if onset_in and site.klass not in (UNKNOWN, POSSIBLY_INTRACRANIAL):
            assert onset is not None
            certain_regions.setdefault(site.region, name)
            onsets.append(onset.earliest)
        else:
            why = (
                "site not recorded"
                if site.klass == UNKNOWN
                else f"only its recorded date ({recorded}) is in the window, onset {onset or 'not recorded'}"
            )
            possible_regions.setdefault(site.region, f"{name}: {why}")
    if not evidence:
        return None
    low = sum(REGION_WEIGHT.get(region, 1) for region in certain_regions)
    extra = {r: n for r, n in unconfirmed_regions.items() if r not in certain_regions}
    progression.unconfirmed_sites = sum(REGION_WEIGHT.get(r, 1) for r in extra)
    progression.possible.extend(
        f"metastasis {text}" for r, text in possible_regions.items() if r not in certain_regions
    )
    sites = join_names(sorted(certain_regions.values())) or "no site with an onset in the window"
    first = min(onsets, default=None)
    latest_day = max(
        (d for f in ctx.facts.conditions if f.evidence in evidence and (d := f.day) is not None),
        key=lambda d: d.earliest,
        default=None,
    )
    return Source(
        CONDITIONS, low, None, latest_day,
        f"at least {low} new metastatic site{'s' if low != 1 else ''} in the window ({sites})",
        evidence, progression_day=first,
    )  # fmt: skip


def _onset(fact: ClinicalFact) -> FhirDay | None:
    """When the metastasis began: a Condition's onset; an MII distant-metastasis Observation's
    effective date (the date it was diagnosed, codes.md §4d-g)."""
    if fact.resource_type == "Observation":
        return fact.day
    resource = fact.resource
    return parse_fhir_day(resource.get("onsetDateTime")) or parse_fhir_day(
        (resource.get("onsetPeriod") or {}).get("start")
    )


# -- metastases for every criterion that reads them ----------------------------------------------


@dataclass(frozen=True)
class Metastases:
    """Active (or unstated) metastasis Conditions of this prostate cancer, with their site, and
    the ones the mCODE related-primary link gives to another cancer (criteria.md §3)."""

    sites: list[tuple[ClinicalFact, Site]]
    other_primary: list[str]  # 'X is a metastasis of Y, not of the prostate cancer'


def find_metastases(ctx: Context) -> Metastases:
    """The prostate metastases, worked out once per screen (progression, spinal-lesion and the
    strata read them)."""
    if ctx.metastases is None:
        ctx.metastases = _metastases_of(ctx)
    return ctx.metastases


def prostate_metastases(ctx: Context) -> list[tuple[ClinicalFact, Site]]:
    """Active (or unstated) metastasis Conditions of this prostate cancer, with their site."""
    return find_metastases(ctx).sites


def _metastases_of(ctx: Context) -> Metastases:
    found = Metastases([], [])
    records = ctx.facts.conditions + [
        f
        for f in ctx.facts.observations_of("distant-metastasis-site")
        if f.status in ctx.params.observation_statuses_used
    ]
    for fact in sorted(records, key=lambda f: f.evidence.order_key):  # whatever the source's order
        if fact.resource_type == "Condition" and fact.status not in _ACTIVE_OR_UNSET:
            continue
        if not is_metastasis_condition(ctx, fact):
            continue
        other = other_primary(ctx, fact)
        if other is not None:
            found.other_primary.append(
                f"{fact.label} is a metastasis of {other.label}, not of the prostate cancer"
            )
            continue
        found.sites.append((fact, condition_site(ctx, fact)))
    return found


def spinal_metastasis_sites(ctx: Context) -> list[tuple[ClinicalFact, Site]]:
    """Spinal (vertebral) prostate metastases: active metastasis Conditions at a spinal site
    (any date), and lesion-level findings at a spinal site in the imaging window (any status)."""
    found = [(f, s) for f, s in prostate_metastases(ctx) if s.spinal]
    days = ctx.params.imaging_window_days
    for fact in prostate_findings(ctx):
        if ctx.in_window(fact.day, days):
            site = finding_site(ctx, fact)
            if site.spinal:
                found.append((fact, site))
    return found


def bone_metastases_without_site(ctx: Context) -> list[ClinicalFact]:
    """Bone metastases recorded without a bone named (criteria.md §3 spinal-lesion: then spinal
    involvement is not known, never 'no spinal metastasis')."""
    return [
        fact
        for fact, site in prostate_metastases(ctx)
        if site.klass == BONE and not site.spinal and not fact.resource.get("bodySite")
    ]


# -- strata (criteria.md §6) ---------------------------------------------------------------------


def metastases_stratum(ctx: Context) -> str | None:
    """'1' from an exact count of 1, '>1' from a count or lower bound of 2 or more."""
    progression = find_progression(ctx)
    if not progression.sources:
        return None
    if progression.conflict:
        # sources disagree on the side of the limit, but if each has 2 or more it is '>1'
        return ">1" if min(s.low for s in progression.conflict) >= 2 else None
    if progression.exact == 1:
        return "1"
    if progression.low >= 2:
        return ">1"
    return None


_DECIDES_M1BC = {BONE, "visceral", INTRACRANIAL, POSSIBLY_INTRACRANIAL}
_NODAL_OR_LOCAL = {"local", "regional-node", "nonregional-node", "node"}


def recorded_site_classes(ctx: Context) -> set[str]:
    """Location classes of every recorded prostate metastatic site and lesion location."""
    classes = {site.klass for fact, site in prostate_metastases(ctx) if not is_unconfirmed(fact)}
    vs = ctx.mappings.vs
    for fact in prostate_findings(ctx):
        value = fact.resource.get("valueCodeableConcept")
        if any(
            vs(f"lesion-{v}").matches(value) for v in ("new", "progressive", "stable", "regressing")
        ):
            classes.add(finding_site(ctx, fact).klass)
    return classes


def localization(ctx: Context) -> str | None:
    """criteria.md §6: any bone or visceral site makes M1b-M1c; only local, nodal and M1a sites
    make local-N-M1a; a bladder/rectum or pelvis site, or one of unknown location, leaves it
    undecided unless other sites decide; with nothing decided, the most recent M category."""
    classes = recorded_site_classes(ctx)
    if classes & _DECIDES_M1BC:
        return "M1b-M1c"
    if classes & _NODAL_OR_LOCAL and not classes - _NODAL_OR_LOCAL:
        return "local-N-M1a"
    # nothing recorded, or only sites that do not decide (bladder/rectum, pelvis, unknown):
    # the most recent M category, where there is one, says more than they do
    return _from_m_category(ctx)


def _from_m_category(ctx: Context) -> str | None:
    vs = ctx.mappings.vs
    for fact in most_recent_first(ctx.facts.observations_of("m-category")):
        if fact.status not in ctx.params.observation_statuses_used:
            continue
        value = fact.resource.get("valueCodeableConcept")
        if vs("m-category-m1a").matches(value):
            return "local-N-M1a"
        if vs("m-category-m1bc").matches(value):
            return "M1b-M1c"
        return None  # the most recent M category decides, or nothing does
    return None


def valid_until(ctx: Context, day: date) -> date:
    """Imaging stays within the protocol window until this day (criteria.md §7b)."""
    return day + timedelta(days=ctx.params.imaging_window_days)
