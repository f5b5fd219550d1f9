"""Hypothesis-generated FHIR resources through the engine: valid-but-odd (partial dates, time
zones, odd units, NaN, huge and negative values, codes of every value set the rules read,
unknown codes, contained and dangling medication references) and invalid (any JSON where an
element should be). Nothing may escape from `Screener.screen`, and every criterion keeps a
reason; the result follows the §7 contract, survives a round trip and is deterministic."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.fhir.record import PatientRecord
from service.mapping import Mappings, load_mappings
from service.screening.engine import Screener
from service.screening.result import CRITERIA, ScreenResult
from tests.conftest import AS_OF
from tests.contract.contract_schema import check_contract
from tests.reliability import harness

pytestmark = pytest.mark.timeout(240)

MAPPINGS: Mappings = load_mappings()
SCREENER = Screener(MAPPINGS)
KNOWN_CODES = sorted({pair for vs in MAPPINGS.valuesets.values() for pair in vs.exact_pairs()})
DRUG_CODES = sorted(
    {("http://www.nlm.nih.gov/research/umls/rxnorm", c) for d in MAPPINGS.medications.drugs for c in d.rxnorm}
    | {("http://www.whocc.no/atc", c) for d in MAPPINGS.medications.drugs for c in d.atc}
)  # fmt: skip
DRUG_NAMES = sorted({n for d in MAPPINGS.medications.drugs for n in d.names})
UNITS = [*MAPPINGS.unit_factors, "ng/dL", "nmol/L", "pmol/L", "ng/mL", "NG/DL", "mmol/L", "",
         "%", "{score}", "mg", "µg/L", "ng/dl "]  # fmt: skip
EXAMPLES = 200

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)  # fmt: skip
_dates = st.one_of(
    st.dates().map(lambda d: d.isoformat()),
    st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
    st.datetimes().map(lambda d: d.isoformat()),
    st.integers(1800, 2100).map(str),
    st.builds(lambda y, m: f"{y}-{m:02d}", st.integers(1900, 2100), st.integers(1, 12)),
    st.sampled_from(["2026-11-26", "2026-11-26T23:59:59+14:00", "2026-02-30", "yesterday", "",
                     "2026-13-01", "0000-00-00", "2026-11-26T25:00:00Z"]),
)  # fmt: skip
_system = st.sampled_from([*sorted({s for s, _ in KNOWN_CODES}), "urn:oid:1.2.3", "", "LOINC"])
_coding = st.one_of(
    st.sampled_from(KNOWN_CODES + DRUG_CODES).map(lambda p: {"system": p[0], "code": p[1]}),
    st.builds(lambda s, c: {"system": s, "code": c}, _system, st.text(max_size=10)),
    st.builds(lambda s, c: {"system": s, "code": c.lower() + " "}, _system,
              st.sampled_from([c for _, c in KNOWN_CODES])),
)  # fmt: skip
_concept = st.builds(
    lambda codings, text: {"coding": codings, **({"text": text} if text else {})},
    st.lists(_coding, max_size=3),
    st.one_of(st.none(), st.sampled_from(DRUG_NAMES), st.text(max_size=30)),
)
_number = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), st.integers(-(10**12), 10**12),
    st.sampled_from([0, 0.0, -1, 20, 49.9, 50, 50.0001, 1.7, 1e308, 5e-324]),
)  # fmt: skip
_value = st.one_of(
    st.builds(
        lambda v, u, comp: {"valueQuantity": {"value": v, "unit": u, **({"comparator": comp} if comp else {})}},
        _number, st.sampled_from(UNITS), st.sampled_from([None, "<", "<=", ">", ">=", "ad"]),
    ),
    st.builds(lambda s: {"valueString": s}, st.sampled_from(["<0.5 ng/mL", "twenty", "", "1,7 nmol/L", "> 10"])),
    st.builds(lambda c: {"valueCodeableConcept": c}, _concept),
    st.builds(lambda i: {"valueInteger": i}, st.integers(-5, 200)),
    st.just({}),
)  # fmt: skip
_status = st.sampled_from(["final", "amended", "corrected", "preliminary", "cancelled",
                           "entered-in-error", "active", "completed", "unknown", "bogus"])  # fmt: skip


def _observation(i: int) -> st.SearchStrategy[dict[str, Any]]:
    return st.builds(
        lambda code, value, status, when, comps: {
            "resourceType": "Observation", "id": f"o{i}", "status": status, "code": code,
            "subject": {"reference": "Patient/p"}, "effectiveDateTime": when, **value,
            **({"component": comps} if comps else {}),
        },
        _concept, _value, _status, _dates,
        st.lists(st.builds(lambda c, v: {"code": c, **v}, _concept, _value), max_size=2),
    )  # fmt: skip


def _condition(i: int) -> st.SearchStrategy[dict[str, Any]]:
    return st.builds(
        lambda code, onset, clinical, sites: {
            "resourceType": "Condition", "id": f"c{i}", "code": code,
            "subject": {"reference": "Patient/p"}, "onsetDateTime": onset,
            "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": clinical}]},
            "bodySite": sites,
        },
        _concept, _dates, st.sampled_from(["active", "resolved", "remission", "inactive", "x"]),
        st.lists(_concept, max_size=2),
    )  # fmt: skip


def _medication_use(i: int) -> st.SearchStrategy[dict[str, Any]]:
    kinds = st.sampled_from(
        ["MedicationStatement", "MedicationRequest", "MedicationAdministration"]
    )
    med = st.one_of(
        st.builds(lambda c: {"medicationCodeableConcept": c}, _concept),
        st.sampled_from([{"medicationReference": {"reference": "Medication/missing"}},
                         {"medicationReference": {"reference": "#m1"}},
                         {"medicationReference": {"reference": "http://elsewhere/fhir/Medication/9"}},
                         {"medicationReference": {}}]),
    )  # fmt: skip
    return st.builds(
        lambda kind, m, status, start, end, contained: {
            "resourceType": kind, "id": f"m{i}", "status": status, "intent": "order",
            "subject": {"reference": "Patient/p"}, **m,
            "effectivePeriod": {"start": start, "end": end}, "authoredOn": start,
            "dosage": [{"timing": {"repeat": {"boundsDuration": {"value": 3, "unit": "mo"}}}}],
            **({"contained": [{"resourceType": "Medication", "id": "m1", "code": contained}]} if contained else {}),
        },
        kinds, med, _status, _dates, st.one_of(st.none(), _dates), st.one_of(st.none(), _concept),
    )  # fmt: skip


def _procedure(i: int) -> st.SearchStrategy[dict[str, Any]]:
    return st.builds(
        lambda code, when, status, sites: {
            "resourceType": "Procedure", "id": f"p{i}", "status": status, "code": code,
            "subject": {"reference": "Patient/p"}, "performedDateTime": when, "bodySite": sites,
        },
        _concept, _dates, st.sampled_from(["completed", "in-progress", "not-done", "bogus"]),
        st.lists(_concept, max_size=2),
    )  # fmt: skip


_patient = st.builds(
    lambda gender, birth, deceased: {
        "resourceType": "Patient", "id": "p", "gender": gender, "birthDate": birth, **deceased,
    },
    st.sampled_from(["male", "female", "other", "unknown", "MALE", ""]),
    _dates,
    st.sampled_from([{}, {"deceasedBoolean": True}, {"deceasedBoolean": False},
                     {"deceasedDateTime": "2026-01-01"}, {"deceasedDateTime": "garbage"}]),
)  # fmt: skip


def _resources() -> st.SearchStrategy[list[dict[str, Any]]]:
    makers = [_observation, _condition, _medication_use, _procedure]
    return st.lists(st.sampled_from(makers), max_size=12).flatmap(
        lambda chosen: st.tuples(*(make(i) for i, make in enumerate(chosen))).map(list)
    )


def _broken(resource: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    """The resource with one element replaced by any JSON (invalid FHIR)."""
    keys = [k for k in resource if k not in ("resourceType",)]
    return {**resource, keys[hash(key) % len(keys)] if keys else key: value}


def _screen(patient: dict[str, Any] | None, resources: list[dict[str, Any]]) -> dict[str, Any]:
    record = PatientRecord("p")
    if patient is not None:
        record.add(patient)
    for resource in resources:
        record.add(resource)
    result = SCREENER.screen(record, AS_OF)
    data = result.to_dict()
    assert [c["id"] for c in data["criteria"]] == [cid for cid, _ in CRITERIA]
    for criterion in data["criteria"]:
        assert isinstance(criterion["reason"], str) and criterion["reason"].strip(), criterion
    check_contract(data)
    assert ScreenResult.from_dict(data).to_dict() == data
    return data


_counts = {"odd": 0, "invalid": 0, "candidates": 0}


@given(patient=st.one_of(st.none(), _patient), resources=_resources())
@settings(max_examples=EXAMPLES, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])  # fmt: skip
def test_valid_but_odd_resources(
    patient: dict[str, Any] | None, resources: list[dict[str, Any]]
) -> None:
    data = _screen(patient, resources)
    assert _screen(patient, resources) == data  # deterministic
    _counts["odd"] += 1
    _counts["candidates"] += data["status"] == "candidate"


@given(
    patient=_patient, resources=_resources(),
    breakage=st.lists(st.tuples(st.text(max_size=6), _json), min_size=1, max_size=4),
)  # fmt: skip
@settings(max_examples=EXAMPLES, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])  # fmt: skip
def test_invalid_resources(
    patient: dict[str, Any], resources: list[dict[str, Any]], breakage: list[tuple[str, Any]]
) -> None:
    everything = [patient, *resources]
    for n, (key, value) in enumerate(breakage):
        target = n % len(everything)
        everything[target] = _broken(everything[target], key, value)
    broken_patient = everything[0] if everything[0].get("resourceType") == "Patient" else None
    _screen(broken_patient, [r for r in everything[1:] if isinstance(r.get("resourceType"), str)])
    _counts["invalid"] += 1


def test_the_figures() -> None:
    assert _counts["odd"] >= EXAMPLES // 2 and _counts["invalid"] >= EXAMPLES // 2, _counts
    harness.record(
        "bad input: generated FHIR resources through the engine",
        valid_but_odd_records=_counts["odd"], invalid_records=_counts["invalid"],
        candidates_among_odd=_counts["candidates"], exceptions=0, criteria_without_reason=0,
    )  # fmt: skip


def test_nan_and_infinity_from_a_server() -> None:
    """json.loads (and so requests) accepts NaN and Infinity: a server can send them."""
    for value in (math.nan, math.inf, -math.inf):
        observation = {
            "resourceType": "Observation", "id": "t", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "2986-8"}]},
            "subject": {"reference": "Patient/p"}, "effectiveDateTime": "2026-11-01",
            "valueQuantity": {"value": value, "unit": "ng/dL"},
        }  # fmt: skip
        data = _screen({"resourceType": "Patient", "id": "p", "gender": "male"}, [observation])
        testosterone = next(c for c in data["criteria"] if c["id"] == "castrate-testosterone")
        assert testosterone["result"] != "met", testosterone


@pytest.mark.parametrize(
    ("resource", "criterion"),
    [
        ({"resourceType": "MedicationRequest", "id": "m", "status": "active", "intent": "order",
          "subject": {"reference": "Patient/p"}, "medicationReference": 5}, "systemic-therapy"),
        ({"resourceType": "MedicationStatement", "id": "m", "status": "active",
          "subject": {"reference": "Patient/p"}, "medicationReference": {"reference": "#x"},
          "contained": 7}, "systemic-therapy"),
        ({"resourceType": "Observation", "id": "o", "status": "final", "meta": "v1",
          "code": {"coding": [{"system": "http://loinc.org", "code": "2986-8"}]},
          "subject": {"reference": "Patient/p"}, "valueQuantity": {"value": 20, "unit": "ng/dL"},
          "effectiveDateTime": "2026-11-01"}, "castrate-testosterone"),
    ],
    ids=["medicationReference-not-an-object", "contained-not-a-list", "meta-not-an-object"],
)  # fmt: skip
def test_elements_of_the_wrong_type_read_before_validation(
    resource: dict[str, Any], criterion: str
) -> None:
    """Found by test_invalid_resources: `medicationReference: 5` raised AttributeError out of
    the engine (a 500 for /v1/screen and CDS Hooks, an internal error in a run)."""
    data = _screen({"resourceType": "Patient", "id": "p", "gender": "male"}, [resource])
    decided = next(c for c in data["criteria"] if c["id"] == criterion)
    assert decided["result"] in ("unknown", "not-met", "met") and decided["reason"]
