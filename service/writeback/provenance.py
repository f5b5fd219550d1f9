"""The Provenance of a written result: when, by which software and rules, from which data.

The target is the ResearchSubject written in the same transaction, referenced by its `urn:uuid`
fullUrl; the server replaces the placeholder with the id it assigned (FHIR R4 transaction
processing). A plain replacement gives `ResearchSubject/12`, without a version. How the target
comes to name the version:

- HAPI FHIR (7.0 and later) versions the references at the paths listed in the resource's `meta`
  extension `auto-version-references-at-path`, including references to resources written in the
  same transaction: `target` becomes `ResearchSubject/12/_history/3`. HAPI also strips versions
  from references it stores unless told otherwise, so `entity.what` is listed too; it keeps the
  explicit versions we give (checked against HAPI 8.8: `Observation/1/_history/1` stays so after
  the Observation moved on to version 2).
- Every server: the transaction is atomic, so the subject version in the transaction response
  (`response.location` `ResearchSubject/12/_history/3` on HAPI, `response.etag` where given) was
  written together with this Provenance. Medplum stores the target unversioned and keeps the
  versioned entities as given.

Servers that do not know the extension ignore it (an ordinary extension on `meta`).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from service.screening.result import ScreenResult
from service.writeback.narrative import XHTML_NS, text

PARTICIPANT_TYPE = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"
HAPI_AUTO_VERSION = "http://hapifhir.io/fhir/StructureDefinition/auto-version-references-at-path"

# `target`: version the ResearchSubject; `entity.what`: keep the versions we give (HAPI).
AUTO_VERSION_PATHS = ("target", "entity.what")
JSON = dict[str, Any]


def agent_display(result: ScreenResult) -> str:
    """`MEDCARE Screen 0.1.0, rules medcare-1`: which software and which rules decided."""
    return f"MEDCARE Screen {result.software_version}, rules {result.rules_version}"


def _unversioned(reference: str) -> str:
    return reference.split("/_history/", 1)[0]


def source_entities(result: ScreenResult) -> list[JSON]:
    """Every resource version the decision rested on, once each, sorted; and the Patient.

    The Patient is added unversioned unless some evidence already names it (then that, more
    precise, versioned reference stands for it). The display is the first summary given for
    the reference, in criterion order, so people reading the Provenance see what each one is.
    """
    summaries: dict[str, str] = {}
    for criterion in result.criteria:
        for evidence in criterion.evidence:
            if not summaries.get(evidence.reference):
                summaries[evidence.reference] = evidence.summary
    if not any(_unversioned(ref) == _unversioned(result.patient) for ref in summaries):
        summaries[result.patient] = ""
    entities = []
    for reference in sorted(summaries):
        what: JSON = {"reference": reference}
        if summaries[reference]:
            what["display"] = summaries[reference]
        entities.append({"role": "source", "what": what})
    return entities


def instant(moment: datetime) -> str:
    """A FHIR instant: ISO 8601 with the offset given, UTC written as `Z` (as servers echo it)."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("recorded needs a time zone (a FHIR instant has one)")
    text = moment.isoformat()
    return text.removesuffix("+00:00") + "Z" if moment.utcoffset() == timedelta(0) else text


def _narrative(result: ScreenResult, recorded: datetime, sources: int) -> str:
    """One sentence for people (validators flag resources without narrative, dom-6)."""
    return (
        f'<div xmlns="{XHTML_NS}"><p>{text(agent_display(result))} recorded the pre-screen '
        f"result ({text(result.status.value)}, as of {text(result.as_of)}) for "
        f"{text(result.patient)} at {text(instant(recorded))}, from {sources} source "
        f"resource{'' if sources == 1 else 's'}.</p></div>"
    )


def build_provenance(result: ScreenResult, target: str, recorded: datetime) -> JSON:
    """The Provenance of writing `result` to `target` (a urn:uuid fullUrl or a reference).

    `recorded` is passed in (no clock here): the caller's one timestamp for the write, so a
    Bundle is reproducible in tests. It must carry a time zone, as a FHIR instant does.
    """
    entities = source_entities(result)
    return {
        "resourceType": "Provenance",
        "text": {"status": "generated", "div": _narrative(result, recorded, len(entities))},
        "meta": {
            "extension": [{"url": HAPI_AUTO_VERSION, "valueString": p} for p in AUTO_VERSION_PATHS]
        },
        "target": [{"reference": target}],
        "recorded": instant(recorded),
        "agent": [
            {
                "type": {
                    "coding": [
                        {"system": PARTICIPANT_TYPE, "code": "assembler", "display": "Assembler"}
                    ]
                },
                "who": {"type": "Device", "display": agent_display(result)},
            }
        ],
        "entity": entities,
    }
