"""JSON from outside (source files, NDJSON lines, request bodies) decoded with the limits that
`json.loads` lacks.

Nesting: Python's decoder gives up with a RecursionError near 1,000 levels, and fhir.resources
validation already near 300 (extensions within extensions); real FHIR data is under 10 levels
deep (the fixtures and the Synthea sample: 8). So a document deeper than MAX_DEPTH (the limit
service.fhir.limits applies to server answers) is refused as malformed input, with a ValueError
the caller reports like any other bad line or body, instead of a RecursionError that would stop
a whole screen or fail a request with a 500.

Duplicate keys: `json.loads` silently keeps the last of two equal keys, so two readers of the
same body may see different values; where asked (API bodies) they are refused, naming the key.
"""

from __future__ import annotations

from typing import Any

from service.fhir.limits import MAX_JSON_DEPTH, TooDeep, parse_json

MAX_DEPTH = MAX_JSON_DEPTH
KEY_SHOWN = 64  # characters of a duplicate key quoted in the message


class NestedTooDeeply(ValueError):
    def __init__(self) -> None:
        super().__init__(f"nested more than {MAX_DEPTH} levels deep")


class DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        shown = key if len(key) <= KEY_SHOWN else key[:KEY_SHOWN] + "..."
        super().__init__(f"the key {shown!r} appears twice in one object")
        self.key = key


def loads(data: str | bytes, *, unique_keys: bool = False) -> Any:
    """`json.loads`, raising NestedTooDeeply beyond MAX_DEPTH and, with `unique_keys`,
    DuplicateKey; JSONDecodeError and UnicodeDecodeError pass through as from json.loads."""
    try:
        return parse_json(data, MAX_DEPTH, _unique_object if unique_keys else None)
    except TooDeep:
        raise NestedTooDeeply() from None


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise DuplicateKey(key)
        result[key] = value
    return result
