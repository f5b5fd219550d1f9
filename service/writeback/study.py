"""The ResearchStudy for NCT06585007: built once, found again by its ClinicalTrials.gov number.

No normative identifier system exists for ClinicalTrials.gov (codes.md §9, §U); we write
`https://clinicaltrials.gov` and accept the configured aliases (`http://clinicaltrials.gov`) when
matching studies someone else created, so a site that already registered the trial is reused.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from service.mapping.model import Parameters
from service.writeback.identifiers import study_identifier
from service.writeback.narrative import XHTML_NS, text


def build_research_study(params: Parameters) -> dict[str, Any]:
    """The ResearchStudy we create when the server has none (status `active`: it recruits)."""
    identifier = study_identifier(params)
    title = params.study_title.strip()
    div = f'<div xmlns="{XHTML_NS}"><p><b>{text(identifier.value)}</b>: {text(title)}</p></div>'
    return {
        "resourceType": "ResearchStudy",
        "text": {"status": "generated", "div": div},
        "identifier": [identifier.to_fhir()],
        "title": title,
        "status": "active",
    }


def study_if_none_exist(params: Parameters) -> str:
    """The `If-None-Exist` value for a conditional create: `identifier=system|NCT06585007`."""
    return f"identifier={study_identifier(params).token()}"


def study_search_params(params: Parameters) -> dict[str, str]:
    """Search by value only, so studies recorded under any accepted system are found.

    A search by `system|value` would miss a study registered as `http://clinicaltrials.gov`;
    `pick_study` then keeps only those whose system is one we accept.
    """
    return {"identifier": params.study_id}


def accepted_systems(params: Parameters) -> tuple[str, ...]:
    """The identifier systems that name ClinicalTrials.gov, preferred first."""
    return (params.study_identifier_system, *params.study_identifier_aliases)


def _system_rank(resource: Mapping[str, Any], params: Parameters) -> int | None:
    """How preferred the best matching identifier of a study is (0 best); None if none match."""
    systems = [s.rstrip("/") for s in accepted_systems(params)]
    ranks = [
        systems.index(ident["system"].rstrip("/"))
        for ident in resource.get("identifier") or []
        if isinstance(ident, dict)
        and isinstance(ident.get("system"), str)
        and ident.get("value") == params.study_id
        and ident["system"].rstrip("/") in systems
    ]
    return min(ranks) if ranks else None


def pick_study(searchset: Mapping[str, Any], params: Parameters) -> dict[str, Any] | None:
    """The ResearchStudy in a searchset (`identifier=NCT06585007`) that is ours, or None.

    Only studies whose identifier has an accepted system and our value count (a value search
    also matches other registries' numbers that happen to be equal). When several match, the
    preferred system wins, then the lowest id, so every run picks the same one.
    """
    candidates: list[tuple[int, str, dict[str, Any]]] = []
    for entry in searchset.get("entry") or []:
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict) or resource.get("resourceType") != "ResearchStudy":
            continue
        if (entry.get("search") or {}).get("mode", "match") != "match":
            continue
        rank = _system_rank(resource, params)
        if rank is not None:
            candidates.append((rank, str(resource.get("id", "")), resource))
    if not candidates:
        return None
    return min(candidates, key=lambda c: (c[0], c[1]))[2]
