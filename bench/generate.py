"""Synthetic MEDCARE-like populations of any size, as Bulk Data NDJSON or transaction Bundles.

    python -m bench.generate --n 1000 --seed 1 --out /tmp/pop --format ndjson|bundles

Why synthetic: the benchmark needs thousands of patients shaped like the ones the trial screens
(castration-refractory prostate cancer on ADT, years of testosterone results, metastases,
depot injections) *and* the bulk of an ordinary record that the screener must wade through
(vital signs at every visit, routine labs, unrelated conditions and drugs). Synthea has the noise
but almost never the oncology; the fixtures have the oncology but no noise. Here the relevant
data is ~10% of ~600 resources per patient by default (`--noise` scales the rest).

Properties the benchmarks rely on:
- Deterministic: patient i depends only on (seed, i, as_of, mix), never on N, so a population
  of 1,000 is the first 1,000 patients of one of 10,000 and two runs give identical bytes.
- Streaming: one patient's resources exist in memory at a time; memory does not depend on N.
- Identical resources in both formats (no `meta`), so a screen from NDJSON and from Bundles must
  give the same result byte for byte: the smoke test checks exactly that.
- Valid FHIR R4 (required bindings, cardinalities, UCUM units, R4 MedicationAdministration with
  effective[x]); the HAPI peer validates every resource on load.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import IO, Any, TypeVar

from service import codesystems as cs

Resource = dict[str, Any]
T = TypeVar("T")

ICDO3 = "http://terminology.hl7.org/CodeSystem/icd-o-3"
SCREEN = "https://medcare-screen.org/fhir/CodeSystem/screening"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
MRN_SYSTEM = "https://medcare-screen.org/fhir/bench/mrn"

DEFAULT_AS_OF = date(2026, 11, 26)
FORMATS = ("ndjson", "bundles")


@dataclass(frozen=True)
class Mix:
    """How many resources of each kind a patient gets; `noise` scales everything unrelated.

    The defaults give ~600 resources per patient (Synthea's prostate-age patients have 300 to
    1,200), of which ~60 are ones the rules read.
    """

    noise: float = 1.0
    encounters: tuple[int, int] = (30, 50)
    lab_panel_rate: float = 0.5
    unrelated_conditions: tuple[int, int] = (3, 8)
    chronic_drugs: tuple[int, int] = (1, 4)
    testosterone: tuple[int, int] = (5, 40)
    ecog: tuple[int, int] = (2, 8)
    history_years: int = 10


# --- vocabulary ----------------------------------------------------------------------------
def _table(text: str) -> tuple[tuple[Any, ...], ...]:
    """Rows of `cell | cell | ...` lines, numbers read as int or float: a vocabulary reads as the
    table it is rather than as rows of Python tuples."""
    return tuple(
        tuple(_cell(cell) for cell in line.split("|")) for line in text.strip().splitlines()
    )


def _cell(text: str) -> str | int | float:
    text = text.strip()
    for number in (int, float):
        try:
            return number(text)
        except ValueError:
            pass
    return text


# code | display | UCUM unit | low | high | decimals
VITALS = _table("""
8867-4  | Heart rate                          | /min  | 55   | 100  | 0
9279-1  | Respiratory rate                    | /min  | 12   | 20   | 0
29463-7 | Body weight                         | kg    | 60   | 110  | 1
8302-2  | Body height                         | cm    | 160  | 192  | 1
39156-5 | Body mass index (BMI) [Ratio]       | kg/m2 | 20   | 35   | 1
8310-5  | Body temperature                    | Cel   | 36.1 | 37.6 | 1
2708-6  | Oxygen saturation in Arterial blood | %     | 93   | 100  | 0
""")
BLOOD_PRESSURE = ("85354-9", "Blood pressure panel with all children optional")
SYSTOLIC = ("8480-6", "Systolic blood pressure", 105, 165)
DIASTOLIC = ("8462-4", "Diastolic blood pressure", 60, 95)
# code | display | UCUM unit | low | high | decimals
LABS = _table("""
718-7  | Hemoglobin [Mass/volume] in Blood                                   | g/dL    | 10.5 | 16.5 | 1
6690-2 | Leukocytes [#/volume] in Blood by Automated count                   | 10*3/uL | 3.5  | 11   | 1
777-3  | Platelets [#/volume] in Blood by Automated count                    | 10*3/uL | 140  | 420  | 0
2345-7 | Glucose [Mass/volume] in Serum or Plasma                            | mg/dL   | 70   | 180  | 0
2160-0 | Creatinine [Mass/volume] in Serum or Plasma                         | mg/dL   | 0.6  | 1.8  | 2
2951-2 | Sodium [Moles/volume] in Serum or Plasma                            | mmol/L  | 134  | 146  | 0
2823-3 | Potassium [Moles/volume] in Serum or Plasma                         | mmol/L  | 3.4  | 5.2  | 1
6768-6 | Alkaline phosphatase [Enzymatic activity/volume] in Serum or Plasma | U/L     | 40   | 400  | 0
2857-1 | Prostate specific Ag [Mass/volume] in Serum or Plasma               | ng/mL   | 0.1  | 80   | 2
""")
ENCOUNTER_TYPES = (
    ("185349003", "Encounter for check up (procedure)"),
    ("390906007", "Follow-up encounter (procedure)"),
    ("185345009", "Encounter for symptom (procedure)"),
)
UNRELATED_CONDITIONS = (
    ("38341003", "Hypertensive disorder, systemic arterial (disorder)"),
    ("55822004", "Hyperlipidemia (disorder)"),
    ("44054006", "Diabetes mellitus type 2 (disorder)"),
    ("239873007", "Osteoarthritis of knee (disorder)"),
    ("433144002", "Chronic kidney disease stage 3 (disorder)"),
    ("271737000", "Anemia (disorder)"),
    ("235595009", "Gastroesophageal reflux disease (disorder)"),
    ("40930008", "Hypothyroidism (disorder)"),
    ("73430006", "Sleep apnea (disorder)"),
    ("35489007", "Depressive disorder (disorder)"),
    ("49436004", "Atrial fibrillation (disorder)"),
    ("13645005", "Chronic obstructive lung disease (disorder)"),
)
CHRONIC_DRUGS = (
    ("314076", "lisinopril 10 MG Oral Tablet"),
    ("617312", "atorvastatin 10 MG Oral Tablet"),
    ("860975", "24 HR metformin hydrochloride 500 MG Extended Release Oral Tablet"),
    ("197361", "amlodipine 5 MG Oral Tablet"),
    ("198211", "simvastatin 40 MG Oral Tablet"),
    ("310798", "hydrochlorothiazide 25 MG Oral Tablet"),
    ("966222", "levothyroxine sodium 0.075 MG Oral Tablet"),
    ("863671", "tamsulosin hydrochloride 0.4 MG Oral Capsule"),
    ("243670", "aspirin 81 MG Oral Tablet"),
    ("198240", "omeprazole 20 MG Delayed Release Oral Capsule"),
)
NOISE_PROCEDURES = (
    ("73761001", "Colonoscopy (procedure)"),
    ("268556000", "Urine screening test for diabetes (procedure)"),
    ("171207006", "Depression screening (procedure)"),
    ("430193006", "Medication reconciliation (procedure)"),
    ("104091002", "Hemoglobin A1c measurement (procedure)"),
)
# Prostate cancer Conditions: (weight, codings, text). Histology mix of a real clinic.
PCA_VARIANTS: tuple[tuple[float, tuple[tuple[str, str, str], ...], str], ...] = (
    (0.62, ((cs.SNOMED, "399490008", "Adenocarcinoma of prostate"), (ICDO3, "8140/3", "Adenocarcinoma, NOS")), "Adenocarcinoma of prostate"),
    (0.10, ((cs.SNOMED, "399490008", "Adenocarcinoma of prostate"),), "Adenocarcinoma of prostate"),
    (0.08, ((cs.ICD10_CM, "C61", "Malignant neoplasm of prostate"),), "Prostate cancer"),
    (0.06, ((cs.SNOMED, "254900004", "Carcinoma of prostate"),), "Carcinoma of prostate"),
    (0.04, ((cs.SNOMED, "427492003", "Hormone refractory prostate cancer"), (ICDO3, "8140/3", "Adenocarcinoma, NOS")), "Castration-resistant prostate adenocarcinoma"),
    (0.04, ((cs.ICD10_CM, "C61", "Malignant neoplasm of prostate"), (ICDO3, "8574/3", "Adenocarcinoma with neuroendocrine differentiation")), "Prostate adenocarcinoma with neuroendocrine differentiation"),
    (0.03, ((cs.ICD10_CM, "C61", "Malignant neoplasm of prostate"), (ICDO3, "8500/3", "Infiltrating duct carcinoma, NOS")), "Ductal adenocarcinoma of prostate"),
    (0.03, ((cs.SNOMED, "1208457007", "Small cell neuroendocrine carcinoma of prostate"),), "Small cell carcinoma of prostate"),
)  # fmt: skip
METASTASES = (
    (cs.SNOMED, "94222008", "Metastatic malignant neoplasm to bone"),
    (cs.SNOMED, "94602001", "Metastatic malignant neoplasm to vertebral column"),
    (cs.SNOMED, "94478006", "Metastatic malignant neoplasm to pelvic bone"),
    (
        cs.ICD10_CM,
        "C77.2",
        "Secondary and unspecified malignant neoplasm of intra-abdominal lymph nodes",
    ),
    (cs.SNOMED, "94350006", "Metastatic malignant neoplasm to intrapelvic lymph nodes"),
    (cs.SNOMED, "94391008", "Metastatic malignant neoplasm to lung"),
    (cs.ICD10_CM, "C78.7", "Secondary malignant neoplasm of liver and intrahepatic bile duct"),
)
LESION_LOCATIONS = (
    ("bone", "Bone (M1b)", "Left iliac bone"),
    ("regional-node", "Regional lymph node (N)", "Right external iliac node"),
    ("nonregional-node", "Non-regional lymph node (M1a)", "Para-aortic node"),
    ("visceral", "Visceral or other site (M1c)", "Right lower lobe of lung"),
    ("local-recurrence", "Local recurrence (prostate bed)", "Prostate bed"),
)
LESION_STATUS = {"new": "New", "progressive": "Progressive", "stable": "Stable", "regressing": "Regressing"}  # fmt: skip
# Testosterone reporting conventions: (weight, LOINC, display, UCUM unit, factor from ng/dL)
TESTOSTERONE_LABS = (
    (0.60, "2986-8", "Testosterone [Mass/volume] in Serum or Plasma", "ng/dL", 1.0),
    (0.25, "14913-8", "Testosterone [Moles/volume] in Serum or Plasma", "nmol/L", 1 / 28.842),
    (0.10, "2986-8", "Testosterone [Mass/volume] in Serum or Plasma", "ng/mL", 0.01),
    (0.05, "49041-7", "Testosterone [Mass/volume] in Serum or Plasma by Detection limit <= 1.0 ng/dL", "ng/dL", 1.0),
)  # fmt: skip
LEUPROLIDE_1M = (cs.RXNORM, "752899", "0.25 ML leuprolide acetate 30 MG/ML Prefilled Syringe")
LEUPROLIDE_3M = (
    cs.RXNORM,
    "1946519",
    "3-Month 1.5 ML leuprolide acetate 20 MG/ML Prefilled Syringe",
)
GOSERELIN_3M = (cs.RXNORM, "314008", "goserelin 10.8 MG Drug Implant")
DEGARELIX = (cs.RXNORM, "828751", "degarelix 120 MG Injection")
ABIRATERONE = (cs.RXNORM, "1100075", "abiraterone acetate 250 MG Oral Tablet")
ENZALUTAMIDE = (cs.ATC, "L02BB04", "enzalutamide")
BICALUTAMIDE = (cs.RXNORM, "199123", "bicalutamide 50 MG Oral Tablet")
DOCETAXEL = (cs.RXNORM, "1860480", "1 ML docetaxel 20 MG/ML Injection")
OLAPARIB = (cs.ATC, "L01XK01", "olaparib")


# --- small builders ------------------------------------------------------------------------
def coding(system: str, code: str, display: str) -> dict[str, str]:
    return {"system": system, "code": code, "display": display}


def concept(*codings: tuple[str, str, str], text: str | None = None) -> dict[str, Any]:
    value: dict[str, Any] = {"coding": [coding(*c) for c in codings]}
    if text is not None:
        value["text"] = text
    return value


def category(system: str, code: str, display: str) -> list[dict[str, Any]]:
    return [{"coding": [coding(system, code, display)]}]


def quantity(value: float, unit: str, comparator: str | None = None) -> dict[str, Any]:
    q: dict[str, Any] = {"value": value, "unit": unit, "system": cs.UCUM, "code": unit}
    if comparator is not None:
        q["comparator"] = comparator
    return q


@dataclass
class PatientBuilder:
    """Builds one patient's resources; every id derives from the patient id, so ids are stable."""

    patient_id: str
    rng: random.Random
    as_of: date
    resources: list[Resource] = field(default_factory=list)
    counter: int = 0

    def new_id(self, tag: str) -> str:
        self.counter += 1
        return f"{self.patient_id}-{tag}{self.counter}"

    @property
    def subject(self) -> dict[str, str]:
        return {"reference": f"Patient/{self.patient_id}"}

    def day(self, days_before: int) -> date:
        return self.as_of - timedelta(days=days_before)

    def stamp(self, day: date) -> str:
        """A dateTime with a clinic-hours time and an offset, as EHRs export them."""
        minute = self.rng.randrange(7 * 60, 18 * 60)
        return f"{day.isoformat()}T{minute // 60:02d}:{minute % 60:02d}:00+01:00"

    def add(self, resource: Resource) -> Resource:
        self.resources.append(resource)
        return resource

    def observation(
        self,
        tag: str,
        code: dict[str, Any],
        when: date,
        cat: tuple[str, str] | None,
        encounter: str | None = None,
        **value: Any,
    ) -> Resource:
        r: Resource = {"resourceType": "Observation", "id": self.new_id(tag), "status": "final"}
        if cat is not None:
            r["category"] = category(cs.OBSERVATION_CATEGORY, *cat)
        r["code"] = code
        r["subject"] = self.subject
        if encounter is not None:
            r["encounter"] = {"reference": f"Encounter/{encounter}"}
        r["effectiveDateTime"] = self.stamp(when)
        r["issued"] = f"{when.isoformat()}T19:00:00+01:00"
        r.update(value)
        return self.add(r)

    def condition(
        self,
        tag: str,
        code: dict[str, Any],
        onset: date,
        clinical: str = "active",
        cat: str = "problem-list-item",
    ) -> Resource:
        display = "Problem List Item" if cat == "problem-list-item" else "Encounter Diagnosis"
        return self.add(
            {
                "resourceType": "Condition",
                "id": self.new_id(tag),
                "clinicalStatus": {"coding": [{"system": cs.CONDITION_CLINICAL, "code": clinical}]},
                "verificationStatus": {
                    "coding": [{"system": cs.CONDITION_VER_STATUS, "code": "confirmed"}]
                },
                "category": category(cs.CONDITION_CATEGORY, cat, display),
                "code": code,
                "subject": self.subject,
                "onsetDateTime": onset.isoformat(),
                "recordedDate": onset.isoformat(),
            }
        )

    def medication(self, drug: tuple[str, str, str]) -> str:
        """A Medication resource of this patient (EHRs mint one per order); returns its id."""
        med_id = self.new_id("med")
        self.add({"resourceType": "Medication", "id": med_id, "code": concept(drug, text=drug[2])})
        return med_id

    def statement(
        self, drug: tuple[str, str, str], status: str, start: date, end: date | None = None
    ) -> Resource:
        period = {"start": start.isoformat()}
        if end is not None:
            period["end"] = end.isoformat()
        return self.add(
            {
                "resourceType": "MedicationStatement",
                "id": self.new_id("ms"),
                "status": status,
                "medicationCodeableConcept": concept(drug, text=drug[2]),
                "subject": self.subject,
                "effectivePeriod": period,
                "dateAsserted": (end or start).isoformat(),
            }
        )

    def request(
        self,
        drug: tuple[str, str, str],
        status: str,
        authored: date,
        medication_id: str | None = None,
        encounter: str | None = None,
    ) -> Resource:
        r: Resource = {
            "resourceType": "MedicationRequest",
            "id": self.new_id("mr"),
            "status": status,
            "intent": "order",
        }
        if medication_id is not None:
            r["medicationReference"] = {"reference": f"Medication/{medication_id}"}
        else:
            r["medicationCodeableConcept"] = concept(drug, text=drug[2])
        r["subject"] = self.subject
        if encounter is not None:
            r["encounter"] = {"reference": f"Encounter/{encounter}"}
        r["authoredOn"] = self.stamp(authored)
        r["dosageInstruction"] = [{"sequence": 1, "text": "as directed"}]
        return self.add(r)

    def administration(self, medication_id: str, when: date) -> Resource:
        return self.add(
            {
                "resourceType": "MedicationAdministration",
                "id": self.new_id("ma"),
                "status": "completed",
                "medicationReference": {"reference": f"Medication/{medication_id}"},
                "subject": self.subject,
                "effectiveDateTime": self.stamp(when),
            }
        )

    def procedure(
        self, code: tuple[str, str, str], when: date, body_site: dict[str, Any] | None = None
    ) -> Resource:
        r: Resource = {
            "resourceType": "Procedure",
            "id": self.new_id("pr"),
            "status": "completed",
            "code": concept(code, text=code[2]),
            "subject": self.subject,
            "performedDateTime": self.stamp(when),
        }
        if body_site is not None:
            r["bodySite"] = [body_site]
        return self.add(r)


def _weighted(rng: random.Random, options: tuple[tuple[float, T], ...]) -> T:
    return rng.choices([o for _, o in options], weights=[w for w, _ in options])[0]


def _spread(rng: random.Random, count: int, first: int, last: int) -> list[int]:
    """`count` distinct days-before-as_of between `first` (oldest) and `last`, oldest first."""
    span = max(first - last, 1)
    picks = sorted({rng.randint(last, last + span) for _ in range(count)}, reverse=True)
    return picks


def patient_id(seed: int, index: int) -> str:
    """The id of patient `index` of population `seed` (the same in every format and N)."""
    return f"mc{seed}-{index:06d}"


def patient_resources(index: int, seed: int, as_of: date, mix: Mix) -> list[Resource]:
    """Every resource of patient `index`: Patient first, then its data (noise interleaved)."""
    rng = random.Random(f"medcare-bench:{seed}:{index}")
    b = PatientBuilder(patient_id(seed, index), rng, as_of)
    history_days = mix.history_years * 365
    _patient(b)
    encounters = _noise(b, mix, history_days)
    diagnosis_days = rng.randint(3 * 365, 12 * 365)
    adt_days = diagnosis_days - rng.randint(60, 2 * 365)
    _cancer(b, diagnosis_days)
    _testosterone(b, mix, adt_days)
    _performance(b, mix)
    _lesions(b)
    _therapy(b, adt_days, encounters)
    return b.resources


def _patient(b: PatientBuilder) -> None:
    rng = b.rng
    birth = b.as_of - timedelta(days=rng.randint(52 * 365, 88 * 365))
    gender = "male" if rng.random() < 0.995 else "unknown"
    patient: Resource = {
        "resourceType": "Patient",
        "id": b.patient_id,
        "identifier": [{"system": MRN_SYSTEM, "value": f"MRN{b.patient_id}"}],
        "name": [
            {"use": "official", "family": f"Bench{b.patient_id[-6:]}", "given": ["Synthetic"]}
        ],
        "gender": gender,
        "birthDate": birth.isoformat(),
        "address": [{"city": "Leuven", "postalCode": "3000", "country": "BE"}],
    }
    if rng.random() < 0.02:
        patient["deceasedDateTime"] = b.stamp(b.day(rng.randint(1, 300)))
    b.add(patient)


def _measurements(
    b: PatientBuilder,
    tag: str,
    cat: tuple[str, str],
    rows: tuple[tuple[Any, ...], ...],
    when: date,
    encounter: str,
) -> None:
    """One Observation per row of a vocabulary table (VITALS, LABS), its value drawn in the row's
    range and rounded to the row's decimals."""
    for loinc, name, unit, lo, hi, decimals in rows:
        value = round(b.rng.uniform(lo, hi), decimals)
        b.observation(
            tag, concept((cs.LOINC, loinc, name), text=name), when, cat, encounter,
            valueQuantity=quantity(value, unit),
        )  # fmt: skip


def _noise(b: PatientBuilder, mix: Mix, history_days: int) -> list[tuple[str, int]]:
    """Visits with vital signs and routine labs, chronic conditions and drugs, routine procedures.

    Returns the encounters (id, days before as_of) so that therapy records can hang off them.
    """
    rng = b.rng
    low, high = mix.encounters
    count = round(rng.randint(low, high) * mix.noise)
    visits = []
    for days in _spread(rng, count, history_days, 1):
        when = b.day(days)
        enc_id = b.new_id("enc")
        code, display = rng.choice(ENCOUNTER_TYPES)
        start = b.stamp(when)
        b.add(
            {
                "resourceType": "Encounter",
                "id": enc_id,
                "status": "finished",
                "class": {"system": ACT_CODE, "code": "AMB", "display": "ambulatory"},
                "type": [concept((cs.SNOMED, code, display), text=display)],
                "subject": b.subject,
                "period": {"start": start, "end": start[:11] + "19:00:00+01:00"},
            }
        )
        visits.append((enc_id, days))
        _measurements(b, "vs", ("vital-signs", "Vital Signs"), VITALS, when, enc_id)
        components = [
            {
                "code": concept((cs.LOINC, loinc, name), text=name),
                "valueQuantity": quantity(rng.randint(lo, hi), "mm[Hg]"),
            }
            for loinc, name, lo, hi in (SYSTOLIC, DIASTOLIC)
        ]
        b.observation(
            "bp", concept((cs.LOINC, *BLOOD_PRESSURE), text="Blood pressure"), when,
            ("vital-signs", "Vital Signs"), enc_id, component=components,
        )  # fmt: skip
        if rng.random() < mix.lab_panel_rate:
            _measurements(b, "lab", ("laboratory", "Laboratory"), LABS, when, enc_id)
    low, high = mix.unrelated_conditions
    n_conditions = round(rng.randint(low, high) * min(mix.noise, 1.0))
    for code, display in rng.sample(
        UNRELATED_CONDITIONS, min(n_conditions, len(UNRELATED_CONDITIONS))
    ):
        b.condition("cond", concept((cs.SNOMED, code, display), text=display.split(" (")[0]),
                    b.day(rng.randint(30, history_days)))  # fmt: skip
    low, high = mix.chronic_drugs
    n_drugs = round(rng.randint(low, high) * min(mix.noise, 1.0))
    for rxcui, display in rng.sample(CHRONIC_DRUGS, n_drugs):
        drug = (cs.RXNORM, rxcui, display)
        # a prescription (and refills) at about every third visit
        for enc_id, days in visits[rng.randrange(3) :: 3]:
            status = "active" if days < 120 else "completed"
            b.request(drug, status, b.day(days), encounter=enc_id)
        if rng.random() < 0.3:
            b.statement(drug, "active", b.day(rng.randint(365, history_days)))
    for code, display in rng.sample(NOISE_PROCEDURES, rng.randint(1, 3)):
        b.procedure((cs.SNOMED, code, display), b.day(rng.randint(30, history_days)))
    return visits


def _cancer(b: PatientBuilder, diagnosis_days: int) -> None:
    """The prostate cancer, its biopsy and primary treatment, metastases, other diagnoses."""
    rng = b.rng
    codings, text = _weighted(rng, tuple((w, (c, t)) for w, c, t in PCA_VARIANTS))
    b.condition(
        "pca", concept(*codings, text=text), b.day(diagnosis_days), cat="encounter-diagnosis"
    )
    b.procedure((cs.SNOMED, "65575008", "Biopsy of prostate"), b.day(diagnosis_days + 14))
    primary = rng.random()
    treated = b.day(diagnosis_days - rng.randint(30, 120))
    if primary < 0.5:
        b.procedure((cs.SNOMED, "26294005", "Radical prostatectomy"), treated)
    elif primary < 0.8:
        site = concept((cs.SNOMED, "41216001", "Prostatic structure"), text="Prostate")
        b.procedure(
            (cs.SNOMED, "1156506007", "External beam radiation therapy using photons"),
            treated,
            site,
        )
    elif primary < 0.85:
        b.procedure((cs.SNOMED, "113120007", "Interstitial brachytherapy"), treated)
    for met in rng.sample(METASTASES, rng.choice((1, 1, 2, 2, 3))):
        onset = rng.choice((rng.randint(1, 40), rng.randint(60, diagnosis_days)))
        b.condition("met", concept(met, text=met[2]), b.day(onset))
    extra = rng.random()
    if extra < 0.02:
        cord = (cs.ICD10_CM, "G95.20", "Unspecified cord compression")
        b.condition("cc", concept(cord, text=cord[2]), b.day(rng.randint(5, 200)))
    elif extra < 0.06:
        colon = (cs.ICD10_CM, "C18.9", "Malignant neoplasm of colon, unspecified")
        b.condition("om", concept(colon, text=colon[2]), b.day(rng.randint(100, 1500)))
    elif extra < 0.10:
        bcc = (cs.ICD10_CM, "C44.91", "Basal cell carcinoma of skin, unspecified")
        b.condition("om", concept(bcc, text=bcc[2]), b.day(rng.randint(100, 1500)), "resolved")


def _testosterone(b: PatientBuilder, mix: Mix, adt_days: int) -> None:
    """Years of results: normal before ADT, castrate after, a few escapes and censored values."""
    rng = b.rng
    lab = _weighted(rng, tuple((w, (code, name, unit, factor)) for w, code, name, unit, factor in TESTOSTERONE_LABS))  # fmt: skip
    code, name, unit, factor = lab
    escaped = rng.random() < 0.1
    recent = rng.random() < 0.8
    last = rng.randint(1, 80) if recent else rng.randint(100, 400)
    count = rng.randint(*mix.testosterone)
    days_list = [*_spread(rng, count - 1, adt_days + 120, last + 20), last]
    decimals = {"ng/dL": 0, "nmol/L": 2, "ng/mL": 2}[unit]
    for days in days_list:
        if days > adt_days:
            ng_dl = rng.uniform(250, 750)
        elif escaped and days == last:
            ng_dl = rng.uniform(55, 150)
        else:
            ng_dl = rng.uniform(5, 45)
        comparator = None
        if ng_dl < 45 and rng.random() < 0.12:
            ng_dl, comparator = 20.0, "<"
        value = round(ng_dl * factor, decimals) or round(ng_dl * factor, decimals + 2)
        b.observation(
            "t", concept((cs.LOINC, code, name), text="Testosterone"), b.day(days),
            ("laboratory", "Laboratory"), valueQuantity=quantity(value, unit, comparator),
        )  # fmt: skip
    if rng.random() < 0.05:  # free testosterone: must never count as total
        free = ("2991-8", "Testosterone Free [Mass/volume] in Serum or Plasma")
        b.observation(
            "ft", concept((cs.LOINC, *free), text="Free testosterone"), b.day(last + 3),
            ("laboratory", "Laboratory"), valueQuantity=quantity(round(rng.uniform(1, 9), 1), "pg/mL"),
        )  # fmt: skip


def _performance(b: PatientBuilder, mix: Mix) -> None:
    rng = b.rng
    base = _weighted(rng, ((0.45, 0), (0.35, 1), (0.12, 2), (0.08, 3)))
    last = rng.randint(1, 80) if rng.random() < 0.75 else rng.randint(100, 500)
    days_list = [*_spread(rng, rng.randint(*mix.ecog) - 1, 3 * 365, last + 30), last]
    karnofsky = rng.random() < 0.1
    for days in days_list:
        score = max(0, min(4, base + rng.choice((-1, 0, 0, 0, 1)))) if days != last else base
        if karnofsky:
            code = concept((cs.LOINC, "89243-0", "Karnofsky Performance Status score"))
            b.observation(
                "ps", code, b.day(days), ("survey", "Survey"), valueInteger=100 - 20 * score
            )
        else:
            code = concept((cs.LOINC, "89247-1", "ECOG Performance Status score"))
            b.observation("ps", code, b.day(days), ("survey", "Survey"), valueInteger=score)


def _lesions(b: PatientBuilder) -> None:
    """Progression evidence in one of the ways hospitals record it (criteria.md §4)."""
    rng = b.rng
    imaging = rng.randint(1, 40) if rng.random() < 0.75 else rng.randint(50, 250)
    kind = rng.random()
    count = _weighted(
        rng, ((0.05, 0), (0.25, 1), (0.25, 2), (0.2, 3), (0.1, 4), (0.08, 5), (0.07, 7))
    )
    imaging_cat = ("imaging", "Imaging")
    if kind < 0.45:
        for days in [*_spread(rng, rng.randint(0, 3), 3 * 365, imaging + 60), imaging]:
            value = count if days == imaging else rng.randint(0, 2)
            b.observation(
                "lc", concept((SCREEN, "progressive-lesion-count", "Number of progressive lesions")),
                b.day(days), imaging_cat, valueInteger=value,
            )  # fmt: skip
    elif kind < 0.70:
        statuses = ["new"] * count + [
            rng.choice(("stable", "regressing")) for _ in range(rng.randint(0, 3))
        ]
        for status in statuses:
            code, display, site = rng.choice(LESION_LOCATIONS)
            r = b.observation(
                "les", concept((SCREEN, "imaging-lesion", "Imaging lesion finding")), b.day(imaging),
                imaging_cat, valueCodeableConcept=concept((SCREEN, status, LESION_STATUS[status])),
            )  # fmt: skip
            r["bodySite"] = concept((SCREEN, code, display), text=site)
            r["component"] = [
                {
                    "code": concept((SCREEN, "lesion-size", "Lesion size")),
                    "valueQuantity": quantity(rng.randint(6, 40), "mm"),
                }
            ]
    elif kind < 0.85:
        b.observation(
            "ds", concept((cs.LOINC, "97509-4", "Cancer disease status")), b.day(imaging), None,
            valueCodeableConcept=concept((cs.SNOMED, "271299001", "Patient's condition worsened")),
        )  # fmt: skip


def _therapy(b: PatientBuilder, adt_days: int, visits: list[tuple[str, int]]) -> None:
    """ADT in the ways EHRs record it, plus ARTA, docetaxel, antiandrogens, excluded drugs."""
    rng = b.rng
    mode = rng.random()
    if mode < 0.40:
        b.statement(rng.choice((LEUPROLIDE_1M, LEUPROLIDE_3M)), "active", b.day(adt_days))
    elif mode < 0.72:
        # depot injections every ~3 months, each against the same Medication resource
        med_id = b.medication(rng.choice((LEUPROLIDE_3M, GOSERELIN_3M)))
        stop = rng.randint(5, 80) if rng.random() < 0.9 else rng.randint(200, 400)
        days = adt_days
        while days > stop:
            b.administration(med_id, b.day(days))
            days -= rng.randint(84, 92)
    elif mode < 0.90:
        med_id = b.medication(DEGARELIX)
        b.request(DEGARELIX, "active", b.day(adt_days), medication_id=med_id)
        for _, days in visits:
            if days < adt_days and rng.random() < 0.15:
                b.request(
                    DEGARELIX, "completed", b.day(days), medication_id=b.medication(DEGARELIX)
                )
    elif mode < 0.95:
        b.statement(LEUPROLIDE_1M, "completed", b.day(adt_days), b.day(max(adt_days - 400, 200)))
    if rng.random() < 0.3:
        b.statement(BICALUTAMIDE, "completed", b.day(adt_days + 14), b.day(adt_days - 30))
    if rng.random() < 0.35:
        start = rng.randint(60, max(61, adt_days - 30))
        if rng.random() < 0.5:
            b.request(ABIRATERONE, "active", b.day(start))
            b.statement(ABIRATERONE, "active", b.day(start))
        else:
            b.statement(ENZALUTAMIDE, "active", b.day(start))
    docetaxel = rng.random()
    if docetaxel < 0.22:
        med_id = b.medication(DOCETAXEL)
        last_cycle = rng.randint(3, 20) if docetaxel < 0.03 else rng.randint(120, 900)
        for cycle in range(rng.randint(4, 10)):
            b.administration(med_id, b.day(last_cycle + 21 * cycle))
    excluded = rng.random()
    if excluded < 0.03:
        b.statement(
            OLAPARIB, "completed", b.day(rng.randint(200, 600)), b.day(rng.randint(60, 199))
        )
    elif excluded < 0.05:
        b.procedure((cs.SNOMED, "399315003", "Radionuclide therapy"), b.day(rng.randint(100, 600)))


def population(
    n: int, seed: int, as_of: date = DEFAULT_AS_OF, mix: Mix | None = None
) -> Iterator[list[Resource]]:
    """Patients 0..n-1, one list of resources at a time (nothing else is kept)."""
    mix = mix or Mix()
    for index in range(n):
        yield patient_resources(index, seed, as_of, mix)


# --- writers -------------------------------------------------------------------------------
def dumps(resource: Resource) -> str:
    """Compact JSON, as Bulk Data servers write it."""
    return json.dumps(resource, separators=(",", ":"), ensure_ascii=False)


@dataclass
class WriteStats:
    patients: int = 0
    resources: int = 0
    bytes: int = 0
    by_type: dict[str, int] = field(default_factory=dict)

    def count(self, resource: Resource, size: int) -> None:
        self.resources += 1
        self.bytes += size
        rtype = resource["resourceType"]
        self.by_type[rtype] = self.by_type.get(rtype, 0) + 1


class NdjsonWriter:
    """Bulk Data `$export` layout: one `<Type>.ndjson` per resource type, lines appended as made."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.handles: dict[str, IO[str]] = {}
        self.stats = WriteStats()
        out.mkdir(parents=True, exist_ok=True)

    def write(self, resources: list[Resource]) -> None:
        self.stats.patients += 1
        for resource in resources:
            rtype = resource["resourceType"]
            handle = self.handles.get(rtype)
            if handle is None:
                handle = (self.out / f"{rtype}.ndjson").open("w", encoding="utf-8")
                self.handles[rtype] = handle
            line = dumps(resource) + "\n"
            handle.write(line)
            self.stats.count(resource, len(line.encode("utf-8")))

    def close(self) -> None:
        for handle in self.handles.values():
            handle.close()


class BundleWriter:
    """One transaction Bundle per patient, every entry a PUT with the client id (re-loadable)."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.stats = WriteStats()
        out.mkdir(parents=True, exist_ok=True)

    def write(self, resources: list[Resource]) -> None:
        self.stats.patients += 1
        text = dumps(transaction_bundle(resources))
        (self.out / f"{resources[0]['id']}.json").write_text(text + "\n", encoding="utf-8")
        for resource in resources:
            self.stats.count(resource, 0)
        self.stats.bytes += len(text.encode("utf-8")) + 1

    def close(self) -> None:
        pass


def transaction_bundle(resources: list[Resource]) -> Resource:
    """A transaction of PUTs: ids are the generator's, so loading twice changes nothing.

    fullUrl is a urn:uuid derived from the id: HAPI's validator wants every entry to have an
    absolute fullUrl, and the server's own URL is not known when the files are written."""
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": _urn(r),
                "resource": r,
                "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"},
            }
            for r in resources
        ],
    }


def _urn(resource: Resource) -> str:
    name = f"medcare-bench:{resource['resourceType']}/{resource['id']}"
    return f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, name)}"


def generate(
    n: int,
    seed: int,
    out: Path,
    fmt: str,
    as_of: date = DEFAULT_AS_OF,
    mix: Mix | None = None,
    progress: IO[str] | None = None,
) -> WriteStats:
    """Write a population of `n` patients to `out`; returns what was written."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, not {fmt!r}")
    writer: NdjsonWriter | BundleWriter = (
        NdjsonWriter(out) if fmt == "ndjson" else BundleWriter(out)
    )
    try:
        for count, resources in enumerate(population(n, seed, as_of, mix), start=1):
            writer.write(resources)
            if progress is not None and (count % 200 == 0 or count == n):
                progress.write(
                    f"\rgenerate: {count}/{n} patients, {writer.stats.resources} resources"
                )
                progress.flush()
    finally:
        writer.close()
    if progress is not None and n:
        progress.write("\n")
    return writer.stats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.generate", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--n", type=int, required=True, help="number of patients")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True, help="output folder (created)")
    parser.add_argument("--format", choices=FORMATS, default="ndjson")
    parser.add_argument("--as-of", type=date.fromisoformat, default=DEFAULT_AS_OF,
                        help="the screening day the data is dated around (default 2026-11-26)")  # fmt: skip
    parser.add_argument("--noise", type=float, default=1.0,
                        help="scale of unrelated data: 1 ~ 600 resources/patient, 4 ~ 2,000")  # fmt: skip
    args = parser.parse_args(argv)
    started = time.perf_counter()
    stats = generate(
        args.n, args.seed, args.out, args.format, args.as_of, Mix(noise=args.noise), sys.stderr
    )
    elapsed = time.perf_counter() - started
    print(
        f"generate: {stats.patients} patients, {stats.resources} resources "
        f"({stats.resources / max(stats.patients, 1):.0f}/patient), {stats.bytes / 1e6:.1f} MB "
        f"in {elapsed:.1f} s ({stats.patients / elapsed:.0f} patients/s) -> {args.out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
