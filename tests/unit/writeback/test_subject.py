"""The ResearchSubject: valid R4, readable narrative, and extensions that give the result back."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import replace
from typing import Any

import pytest
from fhir.resources.R4B.researchsubject import ResearchSubject

from service.mapping.model import Parameters
from service.screening.result import CriterionResult, Evidence, ScreenResult
from service.writeback.extensions import DEFAULT_CANONICAL_BASE
from service.writeback.fingerprint import fingerprint
from service.writeback.subject import (
    build_research_subject,
    read_result_from_subject,
    stored_fingerprint,
)
from tests.unit.writeback.sample import (
    RESEARCH_SUBJECT_STATUSES,
    TRICKY_REASON,
    extension_problems,
    ineligible_result,
    make_result,
    with_criterion,
)

STUDY = "ResearchStudy/5"
XHTML = "{http://www.w3.org/1999/xhtml}"
# The elements FHIR R4 narrative allows (txt-1); we use a subset.
NARRATIVE_ELEMENTS = {
    "a", "abbr", "b", "big", "blockquote", "br", "caption", "cite", "code", "col", "colgroup",
    "dd", "dfn", "div", "dl", "dt", "em", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "i", "img",
    "li", "ol", "p", "pre", "q", "samp", "small", "span", "strong", "sub", "sup", "table",
    "tbody", "td", "tfoot", "th", "thead", "tr", "tt", "ul", "var",
}  # fmt: skip

RESULTS = [
    pytest.param(make_result(), id="candidate"),
    pytest.param(ineligible_result(), id="ineligible"),
]


def _subject(result: ScreenResult, params: Parameters) -> dict[str, Any]:
    return build_research_subject(result, params, STUDY)


@pytest.mark.parametrize("result", RESULTS)
def test_subject_is_valid_r4(result: ScreenResult, params: Parameters) -> None:
    subject = _subject(result, params)
    parsed = ResearchSubject.model_validate(subject)
    # nothing we wrote was dropped or reshaped by the model
    assert parsed.model_dump(mode="json", exclude_none=True) == subject
    assert subject["status"] == result.status.value
    assert subject["status"] in RESEARCH_SUBJECT_STATUSES
    assert subject["study"] == {"reference": STUDY}
    assert subject["individual"] == {"reference": "Patient/123"}
    assert subject["identifier"] == [
        {
            "system": "https://medcare-screen.org/fhir/NamingSystem/research-subject",
            "value": "NCT06585007:123",
        }
    ]
    assert "id" not in subject and "period" not in subject
    assert extension_problems(subject) == []


def test_subject_json_is_stable(params: Parameters) -> None:
    first = json.dumps(_subject(make_result(), params), sort_keys=True)
    assert first == json.dumps(_subject(make_result(), params), sort_keys=True)


def test_extensions_live_under_the_configured_canonical_base(params: Parameters) -> None:
    site = replace(params, canonical_base="https://fhir.example.org/medcare")
    subject = _subject(make_result(), site)
    urls = {e["url"] for e in subject["extension"]}
    assert urls and all(
        u.startswith("https://fhir.example.org/medcare/StructureDefinition/") for u in urls
    )


@pytest.mark.parametrize("result", RESULTS)
def test_narrative_is_xhtml_with_every_criterion_and_reason(
    result: ScreenResult, params: Parameters
) -> None:
    text = _subject(result, params)["text"]
    assert text["status"] == "generated"
    root = ET.fromstring(text["div"])
    assert root.tag == f"{XHTML}div"
    assert {e.tag.removeprefix(XHTML) for e in root.iter()} <= NARRATIVE_ELEMENTS
    rows = [[("".join(td.itertext())) for td in tr] for tr in root.iter(f"{XHTML}tr")][1:]
    assert [(r[0], r[1], r[2], r[3]) for r in rows] == [
        (c.id, c.kind.value, c.result.value, c.reason) for c in result.criteria
    ]
    words = "".join(root.itertext())
    assert result.status.value in words
    for item in (*result.needs_review, *result.notes):
        assert item in words


def test_narrative_escapes_markup_in_reasons(params: Parameters) -> None:
    div = _subject(make_result(), params)["text"]["div"]
    assert "&lt;b&gt;bold?&lt;/b&gt;" in div and "&amp; ECOG" in div and "&quot;rising&quot;" in div
    assert TRICKY_REASON not in div
    root = ET.fromstring(div)
    assert root.find(f".//{XHTML}td/{XHTML}b[.='bold?']") is None
    assert TRICKY_REASON in "".join(root.itertext())


def test_narrative_drops_characters_xml_cannot_carry(params: Parameters) -> None:
    result = with_criterion(make_result(), "age", reason="Aged 75\x00\x1b on 2026-11-26.")
    root = ET.fromstring(_subject(result, params)["text"]["div"])
    assert "Aged 75 on 2026-11-26." in "".join(root.itertext())


def test_narrative_summarises_outcome_type_and_strata(params: Parameters) -> None:
    words = "".join(ET.fromstring(_subject(make_result(), params)["text"]["div"]).itertext())
    assert "Patient type: 2" in words
    assert "metastases 1; localization M1b-M1c; systemic therapy type-2" in words
    ineligible = "".join(
        ET.fromstring(_subject(ineligible_result(), params)["text"]["div"]).itertext()
    )
    assert "ruled out by: castrate-testosterone" in ineligible
    assert "Patient type: not determined" in ineligible


@pytest.mark.parametrize("result", RESULTS)
def test_result_round_trips_through_the_extensions(
    result: ScreenResult, params: Parameters
) -> None:
    subject = _subject(result, params)
    assert read_result_from_subject(subject, params.canonical_base) == result.to_dict()
    # as a server would return it: serialised, with id and meta added
    stored = json.loads(ResearchSubject.model_validate(subject).model_dump_json(exclude_none=True))
    stored |= {"id": "42", "meta": {"versionId": "3", "lastUpdated": "2026-11-26T10:00:00Z"}}
    assert read_result_from_subject(stored)["criteria"] == result.to_dict()["criteria"]


def test_round_trip_under_another_canonical_base(params: Parameters) -> None:
    site = replace(params, canonical_base="https://fhir.example.org/medcare")
    subject = _subject(make_result(), site)
    assert read_result_from_subject(subject, site.canonical_base) == make_result().to_dict()
    with pytest.raises(ValueError, match=r"no .*screening-criterion extensions"):
        read_result_from_subject(subject, DEFAULT_CANONICAL_BASE)


def test_round_trip_of_empty_reason_and_summary(params: Parameters) -> None:
    """FHIR strings cannot be empty: the parts are left out and read back as ""."""
    result = make_result(
        criteria=(
            CriterionResult(
                "consent",
                make_result().criteria[0].kind,
                make_result().criteria[0].result,
                "",
                (Evidence("Consent/1", ""),),
            ),
        )
    )
    subject = _subject(result, params)
    ResearchSubject.model_validate(subject)
    assert read_result_from_subject(subject)["criteria"] == result.to_dict()["criteria"]


def test_criterion_extension_shape(params: Parameters) -> None:
    subject = _subject(make_result(), params)
    url = "https://medcare-screen.org/fhir/StructureDefinition/screening-criterion"
    performance = [e for e in subject["extension"] if e["url"] == url][6]
    assert performance == {
        "url": url,
        "extension": [
            {"url": "id", "valueCode": "performance-status"},
            {"url": "kind", "valueCode": "inclusion"},
            {"url": "result", "valueCode": "met"},
            {"url": "reason", "valueString": TRICKY_REASON},
            {"url": "evidence", "valueReference": {"reference": "Observation/81/_history/5", "display": "ECOG 1, 2026-11-10"}},
            {"url": "evidence", "valueReference": {"reference": "Observation/80/_history/1", "display": "PSMA PET: 2 progressive lesions, 2026-11-02"}},
        ],
    }  # fmt: skip


def test_stored_fingerprint(params: Parameters) -> None:
    subject = _subject(make_result(), params)
    assert stored_fingerprint(subject, params.canonical_base) == fingerprint(make_result())
    assert stored_fingerprint(subject, "https://other.example.org/fhir") is None
    assert stored_fingerprint({"resourceType": "ResearchSubject"}, params.canonical_base) is None


def test_reader_rejects_a_broken_criterion(params: Parameters) -> None:
    subject = _subject(make_result(), params)
    criterion = next(e for e in subject["extension"] if e["url"].endswith("/screening-criterion"))
    criterion["extension"] = [p for p in criterion["extension"] if p["url"] != "result"]
    with pytest.raises(ValueError, match="screening-criterion consent: expected one result"):
        read_result_from_subject(subject)
