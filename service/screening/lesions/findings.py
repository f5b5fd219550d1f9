"""Representation 2: lesion-level findings of every exam in the window, combined by site into
[certain, certain + possible] (possible: PET, flare, size, unknown location, unmatched)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from service.fhir.dates import FhirDay
from service.screening.bodysites import (
    BONE,
    CLASS_WORDS,
    INTRACRANIAL,
    POSSIBLY_INTRACRANIAL,
    UNKNOWN,
    Site,
    other_primary,
)
from service.screening.context import Context, join_names
from service.screening.decision import Evidence
from service.screening.facts import ClinicalFact
from service.screening.imaging import flare_start, modality_of
from service.screening.lesions.metastases import finding_site, site_of
from service.screening.lesions.model import FINDINGS, Progression, Source
from service.screening.sizes import POSSIBLE, SET_ASIDE, judge, read_size


@dataclass
class _Lesion:
    site: Site
    exam: date
    certain: bool
    why: str  # why it is only possible ('' when certain)


def from_findings(
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
