"""One read plan for the three readers: the server's searches, the CDS prefetch, the NDJSON filter."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from service.fhir.record import CLINICAL_TYPES
from service.mapping import Mappings
from service.read_plan import cds_prefetch_templates, read_plan
from service.screening.concepts import OBSERVATION_CONCEPTS
from service.screening.prefilter import line_filter


def _prefetch_as_first_offered(mappings: Mappings) -> dict[str, str]:
    """The templates the CDS service offered before the read plan, derived as it did then: the
    Observations of every Observation value set by code, and one search per other type read."""
    codes = [
        f"{system}|{code}"
        for name in OBSERVATION_CONCEPTS
        for system, code in mappings.vs(name).search_codes
    ]
    templates = {
        "patient": "Patient/{{context.patientId}}",
        "observations": "Observation?patient={{context.patientId}}&code=" + ",".join(codes),
    }
    for kind in ("Condition", "MedicationStatement", "MedicationRequest",
                 "MedicationAdministration", "Procedure"):  # fmt: skip
        include = f"&_include={kind}:medication" if kind.startswith("Medication") else ""
        templates[kind[0].lower() + kind[1:]] = f"{kind}?patient={{{{context.patientId}}}}{include}"
    return templates


def test_the_cds_prefetch_is_what_the_cds_service_offered(
    mappings: Mappings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from service.api.views import cds

    monkeypatch.setattr(cds, "runtime", lambda: SimpleNamespace(mappings=mappings))
    assert cds.prefetch_templates() == _prefetch_as_first_offered(mappings)
    assert cds_prefetch_templates(read_plan(mappings)) == cds.prefetch_templates()


def test_the_plan_is_built_once_per_mappings(mappings: Mappings) -> None:
    plan = read_plan(mappings)
    assert read_plan(mappings) is plan
    assert [read.resource_type for read in plan.reads] == list(CLINICAL_TYPES)


def test_the_line_filter_reads_the_plan(mappings: Mappings) -> None:
    plan = read_plan(mappings)
    selection = line_filter(mappings)
    assert selection.kept_types == plan.kept_types
    assert selection.observation_codes == plan.match_codes
