"""The Provenance of a written result: when, by which software and rules, from which data.

The target is the ResearchSubject written in the same transaction, referenced by its `urn:uuid`
fullUrl; the server replaces the placeholder with the id it assigned (FHIR R4 transaction
processing). A plain replacement gives `ResearchSubject/12`, without a version. Two things make
the target name the version: HAPI FHIR (7.0 and later) versions references at the paths listed in
the resource's `meta` extension `auto-version-references-at-path` (here `target`), including
references to resources written in the same transaction; and for every server, the transaction
response's entry for the ResearchSubject gives the version it created (`response.location`
`ResearchSubject/12/_history/3`), and the transaction is atomic, so that version and this
Provenance were written together. Servers that do not know the extension ignore it (it is an
ordinary extension on `meta`).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from service.screening.result import ScreenResult

PARTICIPANT_TYPE = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"
HAPI_AUTO_VERSION = "http://hapifhir.io/fhir/StructureDefinition/auto-version-references-at-path"

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


def build_provenance(result: ScreenResult, target: str, recorded: datetime) -> JSON:
    """The Provenance of writing `result` to `target` (a urn:uuid fullUrl or a reference).

    `recorded` is passed in (no clock here): the caller's one timestamp for the write, so a
    Bundle is reproducible in tests. It must carry a time zone, as a FHIR instant does.
    """
    return {
        "resourceType": "Provenance",
        "meta": {"extension": [{"url": HAPI_AUTO_VERSION, "valueString": "target"}]},
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
        "entity": source_entities(result),
    }
