"""The extensions that carry a screen result on a ResearchSubject, defined once.

Every extension URL is `<canonical_base>/StructureDefinition/<id>`. The base is one setting
(`Parameters.canonical_base`), so an installation can publish the definitions under its own
domain; the ids below never change, because stored ResearchSubjects and the readers of them
(dashboards, our own re-screen planner) find the extensions by them. `profiles/` holds the
StructureDefinitions for the default base, generated from this table (see `profiles.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# The default of Parameters.canonical_base (mappings/parameters.yaml): what profiles/ documents.
DEFAULT_CANONICAL_BASE = "https://medcare-screen.org/fhir"

CRITERION = "screening-criterion"
SCREENING_DATE = "screening-date"
RULES_VERSION = "rules-version"
SOFTWARE_VERSION = "software-version"
PATIENT_TYPE = "patient-type"
STRATA = "strata"
NEEDS_REVIEW = "needs-review"
MISSING_DATA = "missing-data"
NOTE = "screening-note"
FINGERPRINT = "result-fingerprint"
# The profile of the whole ResearchSubject (profiles.research_subject_profile), named in its
# meta.profile; its URL is built like an extension's.
RESEARCH_SUBJECT_PROFILE = "medcare-research-subject"

# Sub-extension urls (relative, as FHIR requires for complex extensions).
CRITERION_PARTS = ("id", "kind", "result", "reason", "evidence")
# The strata keys of criteria.md §7, verbatim (so the dict round-trips unchanged).
STRATA_KEYS = ("metastases", "localization", "systemic_therapy")


@dataclass(frozen=True)
class Part:
    """One sub-extension of a complex extension."""

    url: str
    value_type: str  # FHIR type code of value[x]
    min: int
    max: str
    short: str
    definition: str


@dataclass(frozen=True)
class ExtensionDefinition:
    """What profiles/ says about one extension: enough to generate its StructureDefinition."""

    id: str
    name: str
    title: str
    definition: str
    repeats: bool = False
    value_type: str | None = "string"  # None for a complex extension
    parts: tuple[Part, ...] = ()


DEFINITIONS: tuple[ExtensionDefinition, ...] = (
    ExtensionDefinition(
        id=CRITERION,
        name="ScreeningCriterion",
        title="MEDCARE screening criterion result",
        repeats=True,
        value_type=None,
        definition=(
            "The result of one eligibility criterion of the MEDCARE pre-screen (criteria.md §7): "
            "one extension per criterion, in the order of criteria.md §3."
        ),
        parts=(
            Part(
                "id",
                "code",
                1,
                "1",
                "Criterion id",
                "The stable criterion id of criteria.md §3, e.g. castrate-testosterone.",
            ),
            Part(
                "kind",
                "code",
                1,
                "1",
                "inclusion | exclusion | informational",
                "Whether the criterion is an inclusion, an exclusion or informational only.",
            ),
            Part(
                "result",
                "code",
                1,
                "1",
                "met | not-met | unknown | manual",
                "The result of the criterion (criteria.md §2).",
            ),
            Part(
                "reason",
                "string",
                0,
                "1",
                "Why: a sentence a coordinator can read",
                "The reason for the result. Every result has one (criteria.md §1); the element "
                "is absent only if the reason is empty, which FHIR strings cannot express.",
            ),
            Part(
                "evidence",
                "Reference",
                0,
                "*",
                "A resource version the result rests on",
                "One per evidence item: reference = the resource (versioned, e.g. "
                "Observation/77/_history/2, when the server gave versions), display = the "
                "one-line summary.",
            ),
        ),
    ),
    ExtensionDefinition(
        id=SCREENING_DATE,
        name="ScreeningDate",
        title="MEDCARE screening date (as of)",
        value_type="date",
        definition=(
            "The as_of date of the screen that produced the stored result: the date the rules "
            "looked back from. A later screen with the same result does not rewrite it."
        ),
    ),
    ExtensionDefinition(
        id=RULES_VERSION,
        name="RulesVersion",
        title="MEDCARE rules version",
        definition="The version of the eligibility rules and mappings (e.g. medcare-1).",
    ),
    ExtensionDefinition(
        id=SOFTWARE_VERSION,
        name="SoftwareVersion",
        title="MEDCARE Screen software version",
        definition="The version of MEDCARE Screen that produced the stored result.",
    ),
    ExtensionDefinition(
        id=PATIENT_TYPE,
        name="PatientType",
        title="MEDCARE patient type",
        value_type="integer",
        definition=(
            "The patient type (1 or 2) from the systemic-therapy criterion; absent when it "
            "could not be determined."
        ),
    ),
    ExtensionDefinition(
        id=STRATA,
        name="Strata",
        title="MEDCARE stratification factors",
        value_type=None,
        definition=(
            "The stratification factors of criteria.md §7. A factor that could not be "
            "determined is absent; the extension is absent when none could."
        ),
        parts=(
            Part("metastases", "code", 0, "1", "1 | >1", "Number of metastases."),
            Part(
                "localization",
                "code",
                0,
                "1",
                "local-N-M1a | M1b-M1c",
                "Localization of the metastases.",
            ),
            Part(
                "systemic_therapy",
                "code",
                0,
                "1",
                "type-1 | type-2",
                "Systemic therapy type.",
            ),
        ),
    ),
    ExtensionDefinition(
        id=NEEDS_REVIEW,
        name="NeedsReview",
        title="MEDCARE criterion needing review",
        repeats=True,
        value_type="code",
        definition=(
            "The id of a criterion whose result is unknown or manual: one extension per "
            "criterion, in criteria.md §3 order."
        ),
    ),
    ExtensionDefinition(
        id=MISSING_DATA,
        name="MissingData",
        title="MEDCARE criterion with missing data",
        repeats=True,
        value_type="code",
        definition=(
            "The id of a criterion whose result is unknown (data missing, stale or "
            "ambiguous): one extension per criterion, in criteria.md §3 order."
        ),
    ),
    ExtensionDefinition(
        id=NOTE,
        name="ScreeningNote",
        title="MEDCARE screening note",
        repeats=True,
        definition=(
            "A problem met while reading the patient's record (e.g. a resource that did not "
            "parse), one per note."
        ),
    ),
    ExtensionDefinition(
        id=FINGERPRINT,
        name="ResultFingerprint",
        title="MEDCARE result fingerprint",
        definition=(
            "sha256:<hex> of the canonical JSON of the result without as_of and software "
            "version. Equal fingerprints mean equal results, so a re-screen with an unchanged "
            "result writes nothing."
        ),
    ),
)


def extension_url(canonical_base: str, extension_id: str) -> str:
    """The full extension URL under the configured canonical base."""
    return f"{canonical_base.rstrip('/')}/StructureDefinition/{extension_id}"


def extensions_with_url(resource: Any, url: str) -> list[dict[str, Any]]:
    """The extensions of a raw resource (or complex extension) with this url, in order."""
    found = resource.get("extension") if isinstance(resource, dict) else None
    return [e for e in found or [] if isinstance(e, dict) and e.get("url") == url]
