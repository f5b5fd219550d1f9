"""The §7 output contract of criteria.md as a JSON Schema, shared by every interface's tests."""

from __future__ import annotations

from typing import Any

from service.screening.result import CRITERIA

RESULT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": [
        "patient", "study", "as_of", "status", "patient_type", "strata", "needs_review",
        "missing_data", "criteria", "rules_version", "software_version",
    ],
    "properties": {
        "patient": {"type": "string", "pattern": "^Patient/[A-Za-z0-9\\-\\.]{1,64}$"},
        "study": {"const": "NCT06585007"},
        "as_of": {"type": "string", "pattern": "^\\d{4}-\\d{2}-\\d{2}$"},
        "status": {"enum": ["candidate", "ineligible"]},
        "patient_type": {"enum": [1, 2, None]},
        "strata": {
            "type": "object",
            "required": ["metastases", "localization", "systemic_therapy"],
            "additionalProperties": False,
            "properties": {
                "metastases": {"enum": ["1", ">1", None]},
                "localization": {"enum": ["local-N-M1a", "M1b-M1c", None]},
                "systemic_therapy": {"enum": ["type-1", "type-2", None]},
            },
        },
        "needs_review": {"type": "array", "items": {"enum": [cid for cid, _ in CRITERIA]}},
        "missing_data": {"type": "array", "items": {"enum": [cid for cid, _ in CRITERIA]}},
        "criteria": {
            "type": "array",
            "minItems": len(CRITERIA),
            "maxItems": len(CRITERIA),
            "items": {
                "type": "object",
                "required": ["id", "kind", "result", "reason", "evidence"],
                "properties": {
                    "id": {"enum": [cid for cid, _ in CRITERIA]},
                    "kind": {"enum": ["inclusion", "exclusion", "informational"]},
                    "result": {"enum": ["met", "not-met", "unknown", "manual"]},
                    "reason": {"type": "string", "minLength": 10},
                    "evidence": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["reference", "summary"],
                            "properties": {
                                "reference": {"type": "string", "pattern": "^[A-Z][A-Za-z]+/[^/]+(/_history/[^/]+)?$"},
                                "summary": {"type": "string", "minLength": 1},
                            },
                        },
                    },
                },
            },
        },
        "rules_version": {"type": "string", "minLength": 1},
        "software_version": {"type": "string", "minLength": 1},
    },
}  # fmt: skip


def check_contract(result: dict[str, Any]) -> None:
    """Raise jsonschema.ValidationError unless `result` follows criteria.md §7, incl. the order."""
    import jsonschema

    jsonschema.validate(result, RESULT_SCHEMA)
    ids = [c["id"] for c in result["criteria"]]
    assert ids == [cid for cid, _ in CRITERIA], "criteria must list every §3 criterion in §3 order"
    kinds = {cid: kind.value for cid, kind in CRITERIA}
    assert all(c["kind"] == kinds[c["id"]] for c in result["criteria"])
    # medcare-2 (criteria.md §2, §7b): needs_review lists every unknown and manual criterion,
    # informational ones too; missing_data the unknown inclusions and exclusions, and nothing
    # after a hard exclusion (deceased, or no prostate cancer diagnosis at all).
    results = {c["id"]: c for c in result["criteria"]}
    hard_exclusion = results["deceased"]["result"] == "met" or (
        results["histology"]["result"] == "not-met"
        and results["histology"]["reason"].startswith("No prostate cancer diagnosis")
    )
    unknown = [
        c["id"]
        for c in result["criteria"]
        if c["result"] == "unknown" and c["kind"] != "informational" and not hard_exclusion
    ]
    review = [c["id"] for c in result["criteria"] if c["result"] in ("unknown", "manual")]
    assert result["missing_data"] == unknown and result["needs_review"] == review
    ruled_out = any(
        (c["kind"] == "inclusion" and c["result"] == "not-met")
        or (c["kind"] == "exclusion" and c["result"] == "met")
        for c in result["criteria"]
    )
    assert result["status"] == ("ineligible" if ruled_out else "candidate")
