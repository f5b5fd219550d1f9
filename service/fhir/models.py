"""The one place that decides the FHIR version: fhir.resources R4B models, which read R4 payloads.

Rules read resources as plain dicts (fast, and what arrives on the wire), but only after the
resource passed validation here, so a rule never sees a structurally broken resource. A resource
that fails is turned into a short, value-free message: it names the element at fault but never
echoes patient data (the message can reach logs and reasons).
"""

from __future__ import annotations

from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

FHIR_VERSION = "4.0.1"


class UnreadableResource(Exception):
    """A resource that does not conform to FHIR R4; the message is safe to show and log."""


def validate_resource(resource: dict[str, Any]) -> None:
    """Raise UnreadableResource unless `resource` is a valid R4 resource of its declared type."""
    resource_type = resource.get("resourceType")
    if not isinstance(resource_type, str):
        raise UnreadableResource("no resourceType")
    try:
        model = get_fhir_model_class(resource_type)
    except KeyError as exc:
        raise UnreadableResource(f"unknown resourceType {resource_type!r}") from exc
    try:
        model.model_validate(resource)
    except ValidationError as exc:
        raise UnreadableResource(_describe(exc)) from exc
    except (TypeError, ValueError) as exc:  # fhir.resources raises these for some shapes
        raise UnreadableResource(type(exc).__name__) from exc
    except RecursionError:  # validation recurses per level: ~150 nested extensions suffice
        raise UnreadableResource("nested too deeply") from None


def _describe(error: ValidationError) -> str:
    """'valueQuantity.value: invalid decimal' style text, without the offending values."""
    parts = []
    for item in error.errors(include_input=False, include_url=False)[:3]:
        location = ".".join(str(p) for p in item.get("loc", ()) if p != "__root__")
        parts.append(f"{location or 'resource'}: {item.get('type', 'invalid')}")
    more = error.error_count() - len(parts)
    return "; ".join(parts) + (f" (+{more} more)" if more > 0 else "")
