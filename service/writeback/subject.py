"""The ResearchSubject that carries a screen result, and the reader that gets the result back.

R4 ResearchSubject: `status` is `candidate` or `ineligible` (the only two of the 13 required
codes a pre-screen may assert), `study`, `individual`, and the stable identifier that makes
re-screening update the same resource. The §7 result goes into extensions (extensions.py) and a
generated narrative (narrative.py).

`period` is left out on purpose: R4 defines it as the subject's participation in the study, which
a pre-screen candidate has not begun; the screening date has its own extension, and a period set
from `as_of` would read as an enrolment date in registries and dashboards.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from service.mapping.model import Parameters
from service.screening.result import CriterionResult, ScreenResult
from service.writeback import extensions as ext
from service.writeback.extensions import extension_url, extensions_with_url
from service.writeback.fingerprint import fingerprint
from service.writeback.identifiers import subject_identifier, subject_identifier_system
from service.writeback.narrative import render_narrative

# The statuses this software writes; any other status was set by people (or another system)
# who have taken the subject further, and is theirs to keep.
OUR_STATUSES = frozenset({"candidate", "ineligible"})

# A coordinator's disposition (service/dispositions.py) as R4 ResearchSubject.status
# (profiles/README.md has the table). `new` says nothing beyond the automatic result, so the
# automatic status stands; every other disposition is people's word and wins over it.
DISPOSITION_STATUS: dict[str, str | None] = {
    "new": None,
    "under-review": "screening",
    "contacted": "screening",
    "presented-to-board": "screening",
    "eligible": "eligible",
    "not-eligible": "ineligible",
    "deferred": "potential-candidate",
    "enrolled": "on-study",
    "declined": "not-registered",
}


def subject_status(automatic: str, disposition: str | None = None) -> str:
    """The status to write: the disposition's when people set one that says more than `new`,
    else the automatic result's. So an automatic screen never downgrades people's status: a
    re-screen that turns a patient candidate leaves `not-eligible` (ineligible) as it is, and
    one that rules an `enrolled` patient out leaves on-study."""
    people = DISPOSITION_STATUS.get(disposition) if disposition else None
    return people or automatic


def people_statuses(dispositions: Iterable[str]) -> frozenset[str]:
    """The statuses people set through us with these dispositions (every one recorded for the
    patient): a stored subject in one of them is ours to update (transaction.plan_write), while
    a status no disposition of ours maps to was set by another system and is left alone."""
    return frozenset(s for s in (DISPOSITION_STATUS.get(d) for d in dispositions) if s)


JSON = dict[str, Any]


def _simple(url: str, value_type: str, value: Any) -> JSON:
    return {"url": url, f"value{value_type}": value}


def _criterion_extension(url: str, criterion: CriterionResult) -> JSON:
    parts: list[JSON] = [
        _simple("id", "Code", criterion.id),
        _simple("kind", "Code", criterion.kind.value),
        _simple("result", "Code", criterion.result.value),
    ]
    if criterion.reason:  # a FHIR string cannot be empty; the reader restores ""
        parts.append(_simple("reason", "String", criterion.reason))
    for evidence in criterion.evidence:
        reference: JSON = {"reference": evidence.reference}
        if evidence.summary:
            reference["display"] = evidence.summary
        parts.append(_simple("evidence", "Reference", reference))
    return {"url": url, "extension": parts}


def _strata_extension(url: str, strata: Mapping[str, str | None]) -> JSON | None:
    """Only determined factors; None when there are none (an empty extension is invalid)."""
    parts = [_simple(key, "Code", value) for key, value in strata.items() if value is not None]
    return {"url": url, "extension": parts} if parts else None


def result_extensions(
    result: ScreenResult, canonical_base: str, disposition: str | None = None
) -> list[JSON]:
    """The §7 result as extensions under the canonical base, in a fixed order; the
    fingerprint covers the `disposition` written with it (fingerprint.py)."""

    def url(extension_id: str) -> str:
        return extension_url(canonical_base, extension_id)

    extensions = [
        _simple(url(ext.FINGERPRINT), "String", fingerprint(result, disposition)),
        _simple(url(ext.SCREENING_DATE), "Date", result.as_of),
        _simple(url(ext.RULES_VERSION), "String", result.rules_version),
        _simple(url(ext.SOFTWARE_VERSION), "String", result.software_version),
    ]
    if result.patient_type is not None:
        extensions.append(_simple(url(ext.PATIENT_TYPE), "Integer", result.patient_type))
    strata = _strata_extension(url(ext.STRATA), result.strata)
    if strata is not None:
        extensions.append(strata)
    extensions += [_simple(url(ext.NEEDS_REVIEW), "Code", c) for c in result.needs_review]
    extensions += [_simple(url(ext.MISSING_DATA), "Code", c) for c in result.missing_data]
    extensions += [_simple(url(ext.NOTE), "String", note) for note in result.notes if note]
    extensions += [_criterion_extension(url(ext.CRITERION), c) for c in result.criteria]
    return extensions


def build_research_subject(
    result: ScreenResult, params: Parameters, study_reference: str, disposition: str | None = None
) -> JSON:
    """The ResearchSubject for this result (no id: it is written by conditional update); its
    status follows the coordinators' `disposition` when they set one (`subject_status`)."""
    return {
        "resourceType": "ResearchSubject",
        "meta": {"profile": [extension_url(params.canonical_base, ext.RESEARCH_SUBJECT_PROFILE)]},
        "text": {"status": "generated", "div": render_narrative(result)},
        "extension": result_extensions(result, params.canonical_base, disposition),
        "identifier": [subject_identifier(params, result.patient).to_fhir()],
        "status": subject_status(result.status.value, disposition),
        "study": {"reference": study_reference},
        "individual": {"reference": result.patient},
    }


def stored_fingerprint(subject: Mapping[str, Any], canonical_base: str) -> str | None:
    """The fingerprint a stored ResearchSubject carries, if it was written by us."""
    found = extensions_with_url(subject, extension_url(canonical_base, ext.FINGERPRINT))
    value = found[0].get("valueString") if found else None
    return value if isinstance(value, str) else None


# ---- reading back -------------------------------------------------------------------------


def _value(extension: Mapping[str, Any], key: str, what: str) -> Any:
    if key not in extension:
        raise ValueError(f"{what}: extension {extension.get('url')!r} has no {key}")
    return extension[key]


def _one(resource: Any, url: str, key: str, what: str) -> Any:
    found = extensions_with_url(resource, url)
    if len(found) != 1:
        raise ValueError(f"{what}: expected one {url} extension, found {len(found)}")
    return _value(found[0], key, what)


def _optional(resource: Any, url: str, key: str, what: str) -> Any:
    found = extensions_with_url(resource, url)
    if len(found) > 1:
        raise ValueError(f"{what}: expected at most one {url} extension, found {len(found)}")
    return _value(found[0], key, what) if found else None


def _read_criterion(extension: Mapping[str, Any]) -> JSON:
    what = "screening-criterion"
    criterion_id = _one(extension, "id", "valueCode", what)
    what = f"screening-criterion {criterion_id}"
    evidence = []
    for part in extensions_with_url(extension, "evidence"):
        reference = _value(part, "valueReference", what)
        evidence.append(
            {"reference": reference.get("reference", ""), "summary": reference.get("display", "")}
        )
    return {
        "id": criterion_id,
        "kind": _one(extension, "kind", "valueCode", what),
        "result": _one(extension, "result", "valueCode", what),
        "reason": _optional(extension, "reason", "valueString", what) or "",
        "evidence": evidence,
    }


def _study_id(subject: Mapping[str, Any], canonical_base: str) -> str:
    """The study id from our identifier (`NCT06585007:123` -> `NCT06585007`)."""
    system = subject_identifier_system(canonical_base)
    for identifier in subject.get("identifier") or []:
        if isinstance(identifier, dict) and identifier.get("system") == system:
            study, sep, _ = str(identifier.get("value", "")).rpartition(":")
            if sep:
                return study
    raise ValueError(f"ResearchSubject has no identifier with system {system}")


def read_result_from_subject(
    subject: Mapping[str, Any], canonical_base: str = ext.DEFAULT_CANONICAL_BASE
) -> JSON:
    """The §7 result (as `ScreenResult.to_dict()` gives it) from a stored ResearchSubject.

    The inverse of `build_research_subject`, for whoever needs to know what a server holds
    (integration tests, dashboards written in Python). It reads only our extensions, so fields
    a server adds (id, meta) do not matter. Raises ValueError when the subject lacks them.

    It returns what the server stored: HAPI FHIR strips versions from references it stores (in
    extensions too), so there evidence reads back as `Observation/77`; the versions are kept in
    the Provenance (`entity.what`, see provenance.py). Medplum keeps them as written.
    """

    def url(extension_id: str) -> str:
        return extension_url(canonical_base, extension_id)

    criteria = [_read_criterion(e) for e in extensions_with_url(subject, url(ext.CRITERION))]
    if not criteria:
        raise ValueError(f"ResearchSubject has no {url(ext.CRITERION)} extensions")
    strata_extensions = extensions_with_url(subject, url(ext.STRATA))
    strata: dict[str, str | None] = dict.fromkeys(ext.STRATA_KEYS)
    for part in strata_extensions[0].get("extension", []) if strata_extensions else []:
        strata[str(part.get("url"))] = part.get("valueCode")
    individual = subject.get("individual") or {}
    data: JSON = {
        "patient": individual.get("reference"),
        "study": _study_id(subject, canonical_base),
        "as_of": _one(subject, url(ext.SCREENING_DATE), "valueDate", "screening-date"),
        "status": subject.get("status"),
        "patient_type": _optional(subject, url(ext.PATIENT_TYPE), "valueInteger", "patient-type"),
        "strata": strata,
        "needs_review": [
            e.get("valueCode") for e in extensions_with_url(subject, url(ext.NEEDS_REVIEW))
        ],
        "missing_data": [
            e.get("valueCode") for e in extensions_with_url(subject, url(ext.MISSING_DATA))
        ],
        "criteria": criteria,
        "rules_version": _one(subject, url(ext.RULES_VERSION), "valueString", "rules-version"),
        "software_version": _one(
            subject, url(ext.SOFTWARE_VERSION), "valueString", "software-version"
        ),
    }
    notes = [e.get("valueString") for e in extensions_with_url(subject, url(ext.NOTE))]
    if notes:
        data["notes"] = notes
    return data
