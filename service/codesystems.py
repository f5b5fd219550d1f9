"""The code-system and profile URIs the service, the fixtures and the benchmarks write out.

Why one module: a URI typed twice is a URI that can differ once (a trailing slash, http vs
https) and then silently match nothing. Mappings (`mappings/*.yaml`) keep their own copies as
data; code imports these names.
"""

from __future__ import annotations

from typing import Final

LOINC: Final = "http://loinc.org"
SNOMED: Final = "http://snomed.info/sct"
RXNORM: Final = "http://www.nlm.nih.gov/research/umls/rxnorm"
ATC: Final = "http://www.whocc.no/atc"
UCUM: Final = "http://unitsofmeasure.org"
ICD10: Final = "http://hl7.org/fhir/sid/icd-10"
ICD10_CM: Final = "http://hl7.org/fhir/sid/icd-10-cm"

CONDITION_CLINICAL: Final = "http://terminology.hl7.org/CodeSystem/condition-clinical"
CONDITION_VER_STATUS: Final = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
CONDITION_CATEGORY: Final = "http://terminology.hl7.org/CodeSystem/condition-category"
OBSERVATION_CATEGORY: Final = "http://terminology.hl7.org/CodeSystem/observation-category"
PROVENANCE_PARTICIPANT_TYPE: Final = (
    "http://terminology.hl7.org/CodeSystem/provenance-participant-type"
)

XHTML: Final = "http://www.w3.org/1999/xhtml"
