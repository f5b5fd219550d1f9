"""Progressive lesions, medcare-2 (criteria.md §4): sites, sizes, modality, flare, castration,
the count range and its conflicts, and the strata read from sites (§6).

Every record here is castrated (a testosterone of 20 ng/dL on 2026-10-01, before every exam here) unless a test
says otherwise, so a result turns on the lesion rule under test. Reasons are tested for what
they must say (sites, values, dates, the action), not for their exact words.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from service.mapping import load_mappings
from service.mapping.load import DEFAULT_MAPPINGS_DIR
from service.screening.engine import Screener
from service.screening.result import Result, ScreenResult
from tests.builders import (
    ICD10CM,
    LOINC,
    SCREENING,
    SCT,
    UCUM,
    concept,
    condition,
    medication_statement,
    observation,
    record,
    total_testosterone,
)
from tests.conftest import AS_OF

EXAM = "2026-11-10"
ICDO3 = "http://terminology.hl7.org/CodeSystem/icd-o-3"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
ADENOCARCINOMA = concept(SCT, "399490008", "Adenocarcinoma of prostate")
LEUPROLIDE = concept("http://www.nlm.nih.gov/research/umls/rxnorm", "752899", "leuprolide")
BONE = concept(SCT, "272673000", "Bone structure")
LIVER = concept(SCT, "10200004", "Liver structure")
LUNG = concept(SCT, "39607008", "Lung structure")
FEMUR = concept(SCT, "71341001", "Bone structure of femur")
RIB = concept(SCT, "113197003", "Bone structure of rib")
OBTURATOR_NODE = concept(SCT, "36086000", "Structure of obturator lymph node")
PARA_AORTIC_NODE = concept(SCT, "35783009", "Structure of aortic lymph node")
SHORT_AXIS = concept(SCT, "103340004", "Short Axis")
LONG_AXIS = concept(SCT, "103339001", "Long Axis")
PET = concept(SCT, "82918005", "PSMA PET/CT")
CT = concept(SCT, "77477000", "CT")


def castrated() -> dict[str, Any]:
    return total_testosterone(20, "ng/dL", day="2026-10-01")


def screen(screener: Screener, *resources: dict[str, Any], castrate: bool = True) -> ScreenResult:
    extra = [castrated()] if castrate else []
    return screener.screen(record(condition(ADENOCARCINOMA), *extra, *resources), AS_OF)


def results(result: ScreenResult) -> tuple[Result, Result]:
    return (
        result.criterion("oligoprogression").result,
        result.criterion("polyprogression").result,
    )


def count(n: int, day: str = EXAM, **fields: Any) -> dict[str, Any]:
    code = concept(SCREENING, "progressive-lesion-count")
    return observation(code, day, valueInteger=n, **fields)


def finding(
    site: dict[str, Any] | None,
    value: str = "progressive",
    day: str = EXAM,
    sizes: list[tuple[dict[str, Any], float, str]] = (),  # type: ignore[assignment]
    **fields: Any,
) -> dict[str, Any]:
    resource = observation(
        concept(SCREENING, "imaging-lesion"),
        day,
        valueCodeableConcept=concept(SCREENING, value),
        **fields,
    )
    if site is not None:
        resource["bodySite"] = site
    if sizes:
        resource["component"] = [
            {"code": code, "valueQuantity": {"value": v, "unit": u, "system": UCUM, "code": u}}
            for code, v, u in sizes
        ]
    return resource


def metastasis(code: dict[str, Any], onset: str | None = EXAM, **fields: Any) -> dict[str, Any]:
    resource = condition(code, onset=onset or "2020-01-01", **fields)
    if onset is None:
        del resource["onsetDateTime"]
    return resource


def worsened(day: str = EXAM, **fields: Any) -> dict[str, Any]:
    return observation(
        concept(LOINC, "97509-4"),
        day,
        valueCodeableConcept=concept(SCT, "271299001", "Patient's condition worsened"),
        **fields,
    )


# -- where a lesion is ---------------------------------------------------------------------------


def test_body_structure_codes_classify_lesions(screener: Screener) -> None:
    result = screen(screener, finding(FEMUR), finding(LIVER), finding(PARA_AORTIC_NODE))
    assert results(result) == (Result.MET, Result.NOT_MET)
    assert "3 progressive extracranial lesions" in result.criterion("oligoprogression").reason


def test_a_brain_finding_is_intracranial_not_extracranial(screener: Screener) -> None:
    brain = concept(SCT, "12738006", "Brain structure")
    result = screen(screener, finding(FEMUR), finding(brain))
    oligo = result.criterion("oligoprogression")
    assert oligo.result is Result.UNKNOWN and "ntracranial" in oligo.reason
    assert "1 progressive extracranial lesion" in oligo.reason


def test_dura_mater_is_possibly_intracranial(screener: Screener) -> None:
    dura = concept(SCT, "18545000", "Dura mater")
    result = screen(screener, finding(FEMUR), finding(dura))
    assert results(result) == (Result.UNKNOWN, Result.NOT_MET)
    assert "possibly intracranial" in result.criterion("oligoprogression").reason


def test_skull_bone_is_an_extracranial_bone_lesion(screener: Screener) -> None:
    skull = concept(SCT, "89546000", "Bone structure of cranium")
    result = screen(screener, finding(skull))
    assert results(result) == (Result.MET, Result.NOT_MET)
    assert result.strata["localization"] == "M1b-M1c"


def test_unclassified_site_is_a_possible_lesion_named_with_its_code(screener: Screener) -> None:
    local = concept("http://hospital.example.org/sites", "RS-117", "Weke delen thoraxwand")
    result = screen(screener, finding(FEMUR), finding(RIB), finding(LIVER), finding(local))
    oligo = result.criterion("oligoprogression")
    assert results(result) == (Result.UNKNOWN, Result.NOT_MET)
    assert "RS-117" in oligo.reason and "3 to 4" in oligo.reason


def test_a_finding_without_any_site_is_of_unknown_location(screener: Screener) -> None:
    result = screen(screener, finding(None))
    assert results(result) == (Result.UNKNOWN, Result.NOT_MET)
    assert "0 to 1" in result.criterion("oligoprogression").reason


def test_icdo3_topography_in_bodysite_classifies(screener: Screener) -> None:
    liver = concept(ICDO3, "C22.0", "Liver")
    result = screen(screener, finding(liver, sizes=[(LONG_AXIS, 5, "mm")]))
    # a 5 mm visceral lesion: possible only, so the site was read as visceral
    assert results(result) == (Result.UNKNOWN, Result.NOT_MET)


def test_a_hospital_adds_a_body_site_code_by_editing_data(tmp_path: Path) -> None:
    import shutil

    from service.mapping.load import load_mappings as load

    folder = tmp_path / "mappings"
    shutil.copytree(DEFAULT_MAPPINGS_DIR, folder)
    local = concept("http://hospital.example.org/sites", "RS-117", "Weke delen thoraxwand")
    before = Screener(load(folder))
    assert results(screen(before, finding(local)))[0] is Result.UNKNOWN
    path = folder / "body-sites.yaml"
    path.write_text(
        path.read_text().replace(
            "      - {system: screening, code: visceral}\n",
            "      - {system: screening, code: visceral}\n"
            "      - {system: 'http://hospital.example.org/sites', code: RS-117}\n",
        )
    )
    after = Screener(load_mappings(folder))
    assert results(screen(after, finding(local)))[0] is Result.MET


# -- sizes ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sizes", "oligo", "said"),
    [
        ([(SHORT_AXIS, 16, "mm")], Result.MET, None),
        ([(SHORT_AXIS, 1.6, "cm")], Result.MET, None),
        ([(SHORT_AXIS, 15, "mm")], Result.UNKNOWN, "exactly 15 mm"),
        ([(LONG_AXIS, 22, "mm")], Result.UNKNOWN, "only a longest dimension (22 mm)"),
        ([(concept(SCT, "81827009", "Diameter"), 20, "mm")], Result.UNKNOWN, "20 mm"),
    ],
)
def test_node_size_rules(
    screener: Screener,
    sizes: list[tuple[dict[str, Any], float, str]],
    oligo: Result,
    said: str | None,
) -> None:
    result = screen(screener, finding(OBTURATOR_NODE, sizes=sizes))
    assert results(result) == (oligo, Result.NOT_MET)
    if said:
        assert said in result.criterion("oligoprogression").reason


@pytest.mark.parametrize(
    "sizes", [[(SHORT_AXIS, 12, "mm")], [(LONG_AXIS, 14, "mm"), (SHORT_AXIS, 9, "mm")]]
)
def test_small_nodes_are_set_aside_with_their_size(
    screener: Screener, sizes: list[tuple[dict[str, Any], float, str]]
) -> None:
    result = screen(screener, finding(FEMUR), finding(OBTURATOR_NODE, sizes=sizes))
    oligo = result.criterion("oligoprogression")
    assert oligo.result is Result.MET
    assert "1 progressive extracranial lesion" in oligo.reason and "below 15 mm" in oligo.reason


def test_longest_dimension_below_15_sets_a_node_aside(screener: Screener) -> None:
    result = screen(
        screener, finding(FEMUR), finding(OBTURATOR_NODE, sizes=[(LONG_AXIS, 14, "mm")])
    )
    assert "longest dimension 14 mm" in result.criterion("oligoprogression").reason


def test_a_size_rule_alone_never_makes_not_met(screener: Screener) -> None:
    result = screen(screener, finding(OBTURATOR_NODE, sizes=[(SHORT_AXIS, 8, "mm")]))
    oligo = result.criterion("oligoprogression")
    assert results(result) == (Result.UNKNOWN, Result.NOT_MET)
    assert "8 mm" in oligo.reason and "size" in oligo.reason


@pytest.mark.parametrize(("mm", "oligo"), [(10, Result.UNKNOWN), (11, Result.MET)])
def test_visceral_size_rule(screener: Screener, mm: float, oligo: Result) -> None:
    result = screen(screener, finding(LUNG, sizes=[(LONG_AXIS, mm, "mm")]))
    assert results(result)[0] is oligo


def test_a_size_in_an_unknown_unit_is_no_size(screener: Screener) -> None:
    result = screen(screener, finding(OBTURATOR_NODE, sizes=[(SHORT_AXIS, 1, "in")]))
    oligo = result.criterion("oligoprogression")
    assert oligo.result is Result.MET and "without a size" in oligo.reason


def test_size_in_a_has_member_observation(screener: Screener) -> None:
    size = observation(SHORT_AXIS, EXAM, valueQuantity={"value": 11, "unit": "mm", "code": "mm"})
    node = finding(OBTURATOR_NODE, hasMember=[{"reference": f"Observation/{size['id']}"}])
    result = screen(screener, finding(FEMUR), node, size)
    oligo = result.criterion("oligoprogression")
    assert oligo.result is Result.MET and "11 mm" in oligo.reason


def test_mcode_tumor_size_components(screener: Screener) -> None:
    tumor_size = observation(
        concept(LOINC, "21889-1"),
        EXAM,
        component=[
            {
                "code": concept(LOINC, "33728-7"),
                "valueQuantity": {"value": 0.8, "unit": "cm", "code": "cm"},
            }
        ],
    )
    lesion = finding(LIVER, derivedFrom=[{"reference": f"Observation/{tumor_size['id']}"}])
    result = screen(screener, lesion, tumor_size)
    assert results(result)[0] is Result.UNKNOWN
    assert "8 mm" in result.criterion("oligoprogression").reason


# -- exams combined, the count range -------------------------------------------------------------


def test_exams_on_different_days_add_up(screener: Screener) -> None:
    result = screen(
        screener,
        finding(LIVER, day="2026-11-01", method=CT),
        finding(FEMUR, day="2026-11-12", method=concept(DCM, "NM", "Bone scan")),
        finding(RIB, day="2026-11-12"),
        finding(PARA_AORTIC_NODE, day="2026-11-01"),
    )
    assert results(result) == (Result.NOT_MET, Result.MET)


def test_a_site_that_progressed_then_was_stable_still_counts(screener: Screener) -> None:
    result = screen(
        screener,
        finding(FEMUR, "progressive", day="2026-10-20"),
        finding(FEMUR, "stable", day="2026-11-12"),
    )
    oligo = result.criterion("oligoprogression")
    assert oligo.result is Result.MET and "1 progressive extracranial lesion" in oligo.reason
    assert "2026-10-20" in oligo.reason  # the progression date


def test_the_same_site_on_two_exams_is_one_lesion(screener: Screener) -> None:
    result = screen(screener, finding(FEMUR, day="2026-10-20"), finding(FEMUR, day="2026-11-12"))
    assert "1 progressive extracranial lesion" in result.criterion("oligoprogression").reason


def test_unmatched_sites_run_from_the_largest_exam_to_the_sum(screener: Screener) -> None:
    bone = concept(SCREENING, "bone", "Bone (M1b)")
    result = screen(
        screener,
        finding(bone, day="2026-10-20"),
        finding(bone, day="2026-10-20"),
        finding(bone, day="2026-11-12"),
        finding(bone, day="2026-11-12"),
    )
    oligo = result.criterion("oligoprogression")
    assert results(result) == (Result.UNKNOWN, Result.NOT_MET)
    assert "2 to 4" in oligo.reason


def test_all_stable_findings_are_not_met(screener: Screener) -> None:
    result = screen(screener, finding(FEMUR, "stable"), finding(LIVER, "regressing"))
    assert results(result) == (Result.NOT_MET, Result.NOT_MET)


def test_possible_lesions_never_widen_an_exact_count(screener: Screener) -> None:
    pet_finding = finding(LIVER, method=PET)
    result = screen(screener, count(3), finding(FEMUR), pet_finding)
    oligo = result.criterion("oligoprogression")
    assert results(result) == (Result.MET, Result.NOT_MET)
    assert "3 progressive extracranial lesions" in oligo.reason


def test_reason_gives_modality_date_and_valid_until(screener: Screener) -> None:
    result = screen(screener, count(2, method=CT))
    reason = result.criterion("oligoprogression").reason
    assert (
        "CT" in reason and EXAM in reason and "valid for randomisation until 2026-12-22" in reason
    )


# -- PET, flare, castration ----------------------------------------------------------------------


def test_pet_findings_are_possible_only(screener: Screener) -> None:
    result = screen(screener, finding(FEMUR, method=PET), finding(LIVER, method=PET))
    oligo = result.criterion("oligoprogression")
    assert results(result) == (Result.UNKNOWN, Result.NOT_MET)
    assert "conventional imaging" in oligo.reason


def test_pet_named_in_the_method_text_counts_as_pet(screener: Screener) -> None:
    method = {"text": "68Ga-PSMA PET/CT"}
    result = screen(screener, finding(FEMUR, method=method))
    assert results(result)[0] is Result.UNKNOWN


def test_a_pet_count_of_zero_never_rules_out(screener: Screener) -> None:
    result = screen(screener, count(0, method=PET))
    oligo = result.criterion("oligoprogression")
    assert oligo.result is Result.UNKNOWN and "PET alone never rules" in oligo.reason


def test_a_pet_count_is_possible_only(screener: Screener) -> None:
    result = screen(screener, count(2, method=PET))
    assert results(result) == (Result.UNKNOWN, Result.NOT_MET)
    assert result.strata["metastases"] is None


@pytest.mark.parametrize(
    ("start", "oligo"), [("2026-08-20", Result.UNKNOWN), ("2026-08-17", Result.MET)]
)
def test_bone_flare_within_12_weeks_of_a_new_therapy(
    screener: Screener, start: str, oligo: Result
) -> None:
    """2026-08-20 + 84 days = 2026-11-12 (flare window holds the exam); from 08-17 it ends 11-09."""
    adt = medication_statement(LEUPROLIDE, effectivePeriod={"start": start})
    result = screen(screener, adt, finding(FEMUR, day="2026-11-12"))
    assert results(result)[0] is oligo
    if oligo is Result.UNKNOWN:
        assert "flare" in result.criterion("oligoprogression").reason


def test_progression_before_castration_is_established(screener: Screener) -> None:
    adt = medication_statement(LEUPROLIDE, effectivePeriod={"start": "2026-10-01"})
    result = screen(screener, adt, count(2), castrate=False)
    oligo = result.criterion("oligoprogression")
    assert oligo.result is Result.UNKNOWN
    assert "castration" in oligo.reason and "Chase" in oligo.reason


def test_castration_from_adt_12_weeks_before_progression(screener: Screener) -> None:
    adt = medication_statement(LEUPROLIDE, effectivePeriod={"start": "2026-08-18"})
    result = screen(screener, adt, count(2), castrate=False)
    assert results(result)[0] is Result.MET


def test_castration_from_testosterone_needs_it_within_12_months(screener: Screener) -> None:
    old = total_testosterone(20, "ng/dL", day="2025-11-09")
    result = screen(screener, old, count(2), castrate=False)
    assert results(result)[0] is Result.UNKNOWN


# -- disease status and metastasis Conditions ----------------------------------------------------


def test_worsened_status_does_not_hide_four_new_sites(screener: Screener) -> None:
    sites = [
        metastasis(concept(SCT, "94222008")),
        metastasis(concept(SCT, "94381002")),
        metastasis(concept(SCT, "94391008")),
        metastasis(concept(SCT, "94161006")),
    ]
    result = screen(screener, worsened(), *sites)
    assert results(result) == (Result.NOT_MET, Result.MET)
    assert result.strata["metastases"] == ">1"


def test_mcode_stu1_disease_status_code_counts(screener: Screener) -> None:
    status = worsened()
    status["code"] = concept(LOINC, "88040-1")
    result = screen(screener, status)
    assert "worsened" in result.criterion("oligoprogression").reason


def test_a_laboratory_only_status_is_not_imaging(screener: Screener) -> None:
    extension = {
        "url": "http://hl7.org/fhir/us/mcode/StructureDefinition/mcode-evidence-type",
        "valueCodeableConcept": concept(SCT, "386344002"),
    }
    result = screen(screener, worsened(extension=[extension]))
    oligo = result.criterion("oligoprogression")
    assert oligo.result is Result.UNKNOWN and "laboratory" in oligo.reason
    assert "No imaging evidence" in oligo.reason


def test_the_same_organ_in_two_code_systems_is_one_site(screener: Screener) -> None:
    result = screen(
        screener,
        metastasis(concept(ICD10CM, "C79.51")),
        metastasis(concept(SCT, "94222008")),
        metastasis(concept(SCT, "94381002")),
    )
    assert "at least 2 new metastatic sites" in result.criterion("oligoprogression").reason


def test_multiple_node_regions_count_as_two(screener: Screener) -> None:
    result = screen(
        screener, metastasis(concept(ICD10CM, "C77.8")), metastasis(concept(SCT, "94222008"))
    )
    assert "at least 3 new metastatic sites" in result.criterion("oligoprogression").reason


def test_a_recorded_date_alone_makes_a_possible_site(screener: Screener) -> None:
    old = metastasis(concept(SCT, "94381002"), onset="2024-02-01", recordedDate=EXAM)
    new = metastasis(concept(SCT, "94222008"))
    result = screen(screener, old, new)
    oligo = result.criterion("oligoprogression")
    assert "at least 1 new metastatic site" in oligo.reason and "recorded date" in oligo.reason


def test_unconfirmed_metastases_never_decide_polyprogression(screener: Screener) -> None:
    provisional = concept(
        "http://terminology.hl7.org/CodeSystem/condition-ver-status", "provisional"
    )
    sites = [
        metastasis(concept(SCT, code), verificationStatus=provisional)
        for code in ("94222008", "94381002", "94391008", "94161006")
    ]
    result = screen(screener, *sites)
    poly = result.criterion("polyprogression")
    assert results(result) == (Result.UNKNOWN, Result.UNKNOWN)
    assert "provisional" in poly.reason


def test_other_primaries_metastases_are_not_prostate_lesions(screener: Screener) -> None:
    lung_cancer = condition(concept(ICD10CM, "C34.90", "Malignant neoplasm of lung"))
    link = {
        "url": "http://hl7.org/fhir/StructureDefinition/condition-related",
        "valueReference": {"reference": f"Condition/{lung_cancer['id']}"},
    }
    sites = [
        metastasis(concept(SCT, code), extension=[link])
        for code in ("94222008", "94381002", "94225005", "94161006")
    ]
    result = screen(screener, lung_cancer, *sites)
    assert results(result) == (Result.UNKNOWN, Result.NOT_MET)
    assert "No imaging evidence" in result.criterion("oligoprogression").reason
    assert result.strata["localization"] is None


def test_a_link_to_the_prostate_primary_keeps_the_metastasis(screener: Screener) -> None:
    primary = condition(ADENOCARCINOMA)
    link = {
        "url": "http://hl7.org/fhir/us/mcode/StructureDefinition/mcode-related-primary-cancer-condition",
        "valueReference": {"reference": f"Condition/{primary['id']}"},
    }
    result = screen(screener, primary, metastasis(concept(SCT, "94222008"), extension=[link]))
    assert "at least 1 new metastatic site" in result.criterion("oligoprogression").reason


def test_a_new_intracranial_metastasis_makes_oligoprogression_unknown(screener: Screener) -> None:
    result = screen(screener, count(2), metastasis(concept(SCT, "94225005")))
    assert results(result) == (Result.UNKNOWN, Result.NOT_MET)


# -- conflicts -----------------------------------------------------------------------------------


def test_a_count_and_conditions_on_different_sides_conflict(screener: Screener) -> None:
    sites = [metastasis(concept(SCT, c)) for c in ("94222008", "94381002", "94391008", "94161006")]
    result = screen(screener, count(2), *sites)
    oligo, poly = result.criterion("oligoprogression"), result.criterion("polyprogression")
    assert results(result) == (Result.UNKNOWN, Result.UNKNOWN)
    assert "lesion count of 2" in poly.reason and "at least 4" in poly.reason
    assert oligo.reason == poly.reason
    assert result.strata["metastases"] == ">1"


def test_a_count_and_findings_on_different_sides_conflict(screener: Screener) -> None:
    findings = [finding(s) for s in (FEMUR, RIB, LIVER, LUNG)]
    result = screen(screener, count(2), *findings)
    assert results(result) == (Result.UNKNOWN, Result.UNKNOWN)


# -- strata (criteria.md §6) ---------------------------------------------------------------------


def m_category(value_code: str, day: str) -> dict[str, Any]:
    return observation(
        concept(SCT, "399387003"), day, valueCodeableConcept=concept(SCT, value_code)
    )


def test_local_recurrence_condition_is_a_local_site(screener: Screener) -> None:
    recurrence = condition(concept(SCT, "314969001", "Local recurrence of prostate cancer"))
    assert screen(screener, recurrence).strata["localization"] == "local-N-M1a"


def test_body_structure_sites_give_the_stratum(screener: Screener) -> None:
    common_iliac = concept(SCT, "245295006")
    result = screen(screener, finding(common_iliac), finding(OBTURATOR_NODE))
    assert result.strata["localization"] == "local-N-M1a"
    assert result.strata["metastases"] == ">1"


def test_a_rectum_site_alone_leaves_the_stratum_undecided(screener: Screener) -> None:
    rectum = concept(SCT, "34402009", "Rectum structure")
    assert screen(screener, finding(rectum)).strata["localization"] is None
    assert screen(screener, finding(rectum), finding(FEMUR)).strata["localization"] == "M1b-M1c"


def test_a_lymph_node_nos_is_nodal_either_way(screener: Screener) -> None:
    node = concept(SCT, "59441001", "Structure of lymph node")
    assert screen(screener, finding(node)).strata["localization"] == "local-N-M1a"


def test_most_recent_m_category_when_no_site_is_recorded(screener: Screener) -> None:
    result = screen(
        screener, m_category("1229907005", "2026-01-01"), m_category("1229904003", "2026-06-01")
    )
    assert result.strata["localization"] == "local-N-M1a"


def test_m_category_not_used_when_a_site_is_recorded(screener: Screener) -> None:
    result = screen(screener, m_category("1229904003", "2026-06-01"), finding(FEMUR))
    assert result.strata["localization"] == "M1b-M1c"


def test_metastases_stratum_from_a_lower_bound_of_two(screener: Screener) -> None:
    result = screen(
        screener, metastasis(concept(SCT, "94222008")), metastasis(concept(SCT, "94381002"))
    )
    assert result.strata["metastases"] == ">1"


def test_metastases_stratum_one_only_from_an_exact_count(screener: Screener) -> None:
    assert screen(screener, count(1)).strata["metastases"] == "1"
    assert screen(screener, metastasis(concept(SCT, "94222008"))).strata["metastases"] is None


def test_the_mappings_load_region_and_spinal_marks() -> None:
    mappings = load_mappings()
    maps = mappings.lesion_maps
    assert maps.spinal.matches(concept(SCT, "35769007"))
    assert not maps.spinal.matches(concept(SCT, "71341001"))
    assert maps.regions["bone"].matches(concept(ICD10CM, "C79.51"))
    assert maps.length_units_mm == {"mm": 1.0, "cm": 10.0}


def test_a_finding_with_an_unrecognised_value_is_possible_never_zero(screener: Screener) -> None:
    result = screen(screener, finding(FEMUR, "stable"), finding(LIVER, "enlarging"))
    oligo = result.criterion("oligoprogression")
    assert results(result) == (Result.UNKNOWN, Result.NOT_MET)
    assert "not recognised" in oligo.reason


def test_only_possible_condition_sites_ask_for_the_reading(screener: Screener) -> None:
    old = metastasis(concept(SCT, "94381002"), onset="2024-02-01", recordedDate=EXAM)
    oligo = screen(screener, old).criterion("oligoprogression")
    assert oligo.result is Result.UNKNOWN
    assert "no certain progressive lesion" in oligo.reason and "Chase" in oligo.reason


def test_evidence_just_outside_the_window_is_named_with_its_age(screener: Screener) -> None:
    oligo = screen(screener, count(5, day="2026-10-14")).criterion("oligoprogression")
    assert oligo.result is Result.UNKNOWN
    assert "5 progressive lesions on 2026-10-14, 43 days ago" in oligo.reason


def test_years_old_metastases_are_not_named_as_just_outside(screener: Screener) -> None:
    oligo = screen(screener, metastasis(concept(SCT, "94222008"), onset="2003-03-26"))
    assert "too old" not in oligo.criterion("oligoprogression").reason


def test_an_unconfirmed_brain_metastasis_keeps_oligoprogression_unknown(screener: Screener) -> None:
    differential = concept(
        "http://terminology.hl7.org/CodeSystem/condition-ver-status", "differential"
    )
    brain = metastasis(concept(SCT, "94225005"), verificationStatus=differential)
    oligo = screen(screener, count(2), brain).criterion("oligoprogression")
    assert oligo.result is Result.UNKNOWN and "differential" in oligo.reason


def test_possible_lesions_for_the_same_reason_are_summarised(screener: Screener) -> None:
    adt = medication_statement(LEUPROLIDE, effectivePeriod={"start": "2026-09-01"})
    result = screen(screener, adt, finding(FEMUR, day="2026-11-12"), finding(RIB, day="2026-11-12"))
    reason = result.criterion("oligoprogression").reason
    assert "Bone structure of femur and Bone structure of rib on 2026-11-12:" in reason
    assert reason.count("flare") == 1


def test_obds_site_codes_in_bodysite_classify(screener: Screener) -> None:
    obds = "https://www.medizininformatik-initiative.de/fhir/ext/modul-onko/CodeSystem/mii-cs-onko-fernmetastasen"
    result = screen(screener, finding(concept(obds, "HEP")), finding(concept(SCT, "258333005")))
    assert results(result) == (Result.MET, Result.NOT_MET)
    assert "2 progressive extracranial lesions" in result.criterion("oligoprogression").reason


def test_a_flare_lesion_confirmed_on_a_later_scan_counts_once(screener: Screener) -> None:
    adt = medication_statement(LEUPROLIDE, effectivePeriod={"start": "2026-08-01"})
    early, late = finding(FEMUR, day="2026-10-20"), finding(FEMUR, day="2026-11-12")
    oligo = screen(screener, adt, early, late).criterion("oligoprogression")
    assert (
        oligo.result is Result.MET
    )  # 2026-08-01 + 84 days = 2026-10-24: only the first is a flare
    assert "1 progressive extracranial lesion" in oligo.reason and "flare" not in oligo.reason
    assert "2026-11-12" in oligo.reason  # the progression date is the confirming scan


def test_a_count_of_zero_against_new_metastases_is_not_a_rule_out(screener: Screener) -> None:
    sites = [metastasis(concept(SCT, "94222008")), metastasis(concept(SCT, "94381002"))]
    result = screen(screener, count(0), *sites)
    oligo = result.criterion("oligoprogression")
    assert results(result) == (Result.UNKNOWN, Result.NOT_MET)
    assert "lesion count of 0" in oligo.reason and "at least 2 new metastatic sites" in oligo.reason


def test_a_finding_focused_on_another_cancer_is_not_a_prostate_lesion(screener: Screener) -> None:
    lung_cancer = condition(concept(ICD10CM, "C34.90", "Malignant neoplasm of lung"))
    other = finding(FEMUR, focus=[{"reference": f"Condition/{lung_cancer['id']}"}])
    result = screen(screener, lung_cancer, finding(LIVER), other)
    oligo = result.criterion("oligoprogression")
    assert "1 progressive extracranial lesion" in oligo.reason
    assert "Malignant neoplasm of lung" in oligo.reason


def test_a_count_lower_bound_above_three_is_polyprogression(screener: Screener) -> None:
    code = concept(SCREENING, "progressive-lesion-count")
    at_least = observation(code, EXAM, valueQuantity={"value": 4, "comparator": ">="})
    assert results(screen(screener, at_least)) == (Result.NOT_MET, Result.MET)


def test_pet_named_only_in_what_the_finding_derives_from(screener: Screener) -> None:
    derived = [{"reference": "DiagnosticReport/r1", "display": "PSMA PET/CT 2026-11-10"}]
    result = screen(screener, finding(FEMUR, derivedFrom=derived))
    assert results(result)[0] is Result.UNKNOWN
    assert "PSMA PET/CT 2026-11-10" in result.criterion("oligoprogression").reason


def test_a_disease_status_without_a_value_is_named(screener: Screener) -> None:
    status = worsened()
    del status["valueCodeableConcept"]
    oligo = screen(screener, status).criterion("oligoprogression")
    assert oligo.result is Result.UNKNOWN and "has no value" in oligo.reason


def test_a_status_resting_on_imaging_and_laboratory_counts(screener: Screener) -> None:
    url = (
        "http://hl7.org/fhir/us/mcode/StructureDefinition/mcode-cancer-disease-status-evidence-type"
    )
    extensions = [
        {"url": url, "valueCodeableConcept": concept(SCT, "386344002")},
        {"url": url, "valueCodeableConcept": concept(SCT, "363679005")},
    ]
    oligo = screen(screener, worsened(extension=extensions)).criterion("oligoprogression")
    assert "worsened" in oligo.reason and "laboratory" not in oligo.reason


def test_a_visceral_lesion_with_only_a_short_axis_counts(screener: Screener) -> None:
    result = screen(screener, finding(LIVER, sizes=[(SHORT_AXIS, 8, "mm")]))
    assert results(result)[0] is Result.MET


def test_a_node_without_a_size_counts_and_says_so(screener: Screener) -> None:
    oligo = screen(screener, finding(OBTURATOR_NODE)).criterion("oligoprogression")
    assert oligo.result is Result.MET and "without a size" in oligo.reason


def test_a_lesion_map_concept_may_not_repeat_a_value_set_name(tmp_path: Path) -> None:
    import shutil

    from service.mapping import MappingError

    folder = tmp_path / "mappings"
    shutil.copytree(DEFAULT_MAPPINGS_DIR, folder)
    path = folder / "imaging-methods.yaml"
    path.write_text(path.read_text().replace("  evidence-laboratory:", "  ecog:"))
    with pytest.raises(
        MappingError, match=r"imaging-methods\.yaml: concepts\.ecog: already defined"
    ):
        load_mappings(folder)
    (folder / "body-sites.yaml").unlink()
    with pytest.raises(MappingError, match=r"body-sites\.yaml: file not found"):
        load_mappings(folder)


def test_mii_distant_metastasis_observations_are_metastasis_records(screener: Screener) -> None:
    obds = "https://www.medizininformatik-initiative.de/fhir/ext/modul-onko/CodeSystem/mii-cs-onko-fernmetastasen"
    site = concept(SCT, "385421009", "Site of distant metastasis")
    records = [
        observation(site, EXAM, valueCodeableConcept=concept(obds, code))
        for code in ("OSS", "HEP", "PUL", "ADR")
    ]
    result = screen(screener, worsened(), *records)
    assert results(result) == (Result.NOT_MET, Result.MET)
    assert result.strata["localization"] == "M1b-M1c"
    lymph = observation(site, "2025-01-01", valueCodeableConcept=concept(obds, "LYM"))
    assert screen(screener, lymph).strata["localization"] == "local-N-M1a"
