"""Conventional imaging, flare and castration (criteria.md §4 "Modality", "Flare and castration").

The protocol asks for conventional imaging: PET lesions are possible only, so PET alone never
rules a patient out. Bone lesions on an exam within 12 weeks after a new systemic therapy may be
a flare (PCWG3): possible until a later scan confirms them. Progression must be progression under
castration. Method codes and PET words are data (mappings/imaging-methods.yaml).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from service.fhir.dates import add_months
from service.mapping.model import texts_of
from service.screening.context import Context
from service.screening.facts import ClinicalFact
from service.screening.therapy import was_given
from service.screening.units import castrate_readings

FLARE_DAYS = 84  # 12 weeks (criteria.md §4: start <= exam date <= start + 84 days)
CASTRATION_ADT_DAYS = 84  # ADT evidence 12 weeks or more before the progression date
CASTRATION_TESTOSTERONE_MONTHS = 12
NEW_THERAPY_CLASSES = {"gnrh": "androgen deprivation", "arta": "ARTA", "docetaxel": "docetaxel"}


@dataclass(frozen=True)
class Modality:
    pet: bool
    name: str | None  # 'PSMA PET/CT', 'CT'... None when nothing states it


def modality_of(ctx: Context, fact: ClinicalFact) -> Modality:
    """PET or conventional, from `method` and the displays of what the evidence derives from;
    no stated modality counts as conventional (criteria.md §4)."""
    resource = fact.resource
    method = resource.get("method")
    vs = ctx.mappings.vs
    pet_words = ctx.mappings.lesion_maps.names.get("method-pet")
    texts = texts_of(method)
    for key in ("derivedFrom", "partOf"):
        for reference in resource.get(key) or []:
            if isinstance(reference, dict) and isinstance(reference.get("display"), str):
                texts.append(reference["display"])
    name = texts[0].strip() if texts else None
    if vs("method-pet").matches(method):
        return Modality(True, name or "PET")
    words = " ".join(texts).lower()
    if pet_words is not None and words and pet_words.search(words):
        return Modality(True, name)
    if vs("method-conventional").matches(method):
        return Modality(False, name)
    return Modality(False, name)


# -- flare ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TherapyStart:
    what: str
    day: date


def new_therapy_starts(ctx: Context) -> list[TherapyStart]:
    """The start of each systemic therapy (ADT as one, each ARTA, docetaxel): its earliest
    recorded start. A later record of the same therapy (the next depot dose) is not new."""
    earliest: dict[str, TherapyStart] = {}
    for fact in ctx.facts.medications:
        if not was_given(fact) or fact.start is None:
            continue
        for drug_class, words in NEW_THERAPY_CLASSES.items():
            for match in fact.matches_of(drug_class):
                key = "adt" if drug_class == "gnrh" else match.drug.key
                what = words if drug_class == "gnrh" else match.drug.label
                day = fact.start.earliest
                if key not in earliest or day < earliest[key].day:
                    earliest[key] = TherapyStart(what, day)
    for procedure in ctx.facts.procedures_of("orchiectomy-bilateral"):
        if procedure.day is not None and procedure.status in (None, "completed", "in-progress"):
            day = procedure.day.earliest
            if "adt" not in earliest or day < earliest["adt"].day:
                earliest["adt"] = TherapyStart("androgen deprivation (orchiectomy)", day)
    return sorted(earliest.values(), key=lambda s: (s.day, s.what))


def flare_start(ctx: Context, exam: date) -> TherapyStart | None:
    """The new systemic therapy whose first 12 weeks hold this exam, if any."""
    for start in new_therapy_starts(ctx):
        if start.day <= exam <= start.day + timedelta(days=FLARE_DAYS):
            return start
    return None


# -- castration ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Castration:
    established: bool
    how: str  # what establishes it, or what is missing


def castration_at(ctx: Context, progression: date) -> Castration:
    """Castration established by the progression date (criteria.md §4): a total testosterone
    below 50 ng/dL within the 12 months before it, or ADT evidence 12 weeks or more before it."""
    threshold = ctx.params.castrate_ng_dl
    since = add_months(progression, -CASTRATION_TESTOSTERONE_MONTHS)
    newest_first = sorted(
        ctx.facts.observations_of("testosterone-total"),
        key=lambda f: (f.day.earliest if f.day else date.min, f.evidence.order_key),
        reverse=True,
    )
    before_progression = (
        fact
        for fact in newest_first
        if fact.day is not None and since <= fact.day.earliest <= progression
    )
    newest_castrate = next(castrate_readings(ctx, before_progression), None)
    if newest_castrate is not None:
        fact, measured = newest_castrate
        return Castration(True, f"testosterone {measured.describe()} on {fact.day}")
    starts = [s for s in new_therapy_starts(ctx) if s.what.startswith("androgen deprivation")]
    if starts:
        first = starts[0]
        if first.day <= progression - timedelta(days=CASTRATION_ADT_DAYS):
            return Castration(True, f"{first.what} since {first.day}")
        return Castration(
            False,
            f"the earliest androgen deprivation recorded is from {first.day}, less than 12 "
            f"weeks before the progression of {progression}, and no testosterone below "
            f"{threshold:g} ng/dL in the 12 months before it",
        )
    return Castration(
        False,
        f"no androgen deprivation recorded 12 weeks or more before the progression of "
        f"{progression}, and no testosterone below {threshold:g} ng/dL in the 12 months before it",
    )


def lab_only_status(ctx: Context, resource: dict[str, Any]) -> bool:
    """A disease status whose evidence-type extension says laboratory results only (a PSA
    rise): not imaging evidence (criteria.md §4 item 3)."""
    types = [
        extension.get("valueCodeableConcept")
        for extension in resource.get("extension") or []
        if isinstance(extension, dict)
        and str(extension.get("url", "")).endswith(
            ("mcode-evidence-type", "disease-status-evidence-type")
        )
    ]
    return bool(types) and all(ctx.mappings.vs("evidence-laboratory").matches(t) for t in types)
