"""Pure reading of what a FHIR server sends: statuses, Locations, ETags, links, bodies.

Nothing here does I/O or holds state, so each piece is tested on its own (test_fhir_client.py)
and the transport, paging, batching and write modules share one reading of a server's answer.
Server answers are read tolerantly (a missing or odd field is "not there", not a crash) except
where the contract needs a resource: then the error is a FhirBadResponse naming the request.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, Final, NamedTuple
from urllib.parse import parse_qsl, quote, urlencode

from service.fhir.errors import FhirBadResponse
from service.fhir.limits import TooDeep, parse_json
from service.fhir.origin import origin_or_none

Resource = dict[str, Any]
SearchParams = Sequence[tuple[str, str]] | Mapping[str, str]

# Characters left readable in search URLs (and so in error messages): FHIR token syntax.
QUERY_SAFE: Final = ",|:/$"

_LOCATION = re.compile(
    r"(?:^|/)(?P<type>[A-Z][A-Za-z]+)/(?P<id>[A-Za-z0-9\-.]{1,64})"
    r"(?:/_history/(?P<version>[A-Za-z0-9\-.]{1,64}))?/?$"
)


class Location(NamedTuple):
    resource_type: str
    id: str
    version_id: str | None


class WriteResult(NamedTuple):
    """What a create or update answered: the resource (when returned), status, Location, ETag."""

    resource: Resource | None
    status: int
    location: str | None
    etag: str | None

    @property
    def version_id(self) -> str | None:
        """The new version: from Location, else the ETag, else the returned resource's meta."""
        parsed = parse_location(self.location) if self.location else None
        if parsed and parsed.version_id:
            return parsed.version_id
        if self.etag:
            return self.etag.removeprefix("W/").strip('"') or None
        version = ((self.resource or {}).get("meta") or {}).get("versionId")
        return version if isinstance(version, str) else None


@dataclass(frozen=True)
class Answer:
    """One HTTP answer, its body read whole under the limits (requests' Response is streamed
    and closed before this exists, so nothing here can read more)."""

    status_code: int
    reason: str
    headers: Mapping[str, str]
    content: bytes
    max_depth: int

    def json(self) -> Any:
        """The body as JSON; ValueError (TooDeep included) when it is not usable JSON."""
        return parse_json(self.content, self.max_depth)


def origin_of(url: str) -> str:
    """'https://host:443': the origin `requests` will connect to for `url` (origin.py), or
    'unsafe:' for a URL with userinfo or an ambiguous host, which matches no configured origin."""
    return origin_or_none(url) or "unsafe:"


def loggable(request: str) -> str:
    """A request line for a log: its path and parameter names, no values ('GET Patient?name=…').

    Values of a run's search may be names and birth dates; ids are named separately."""
    head, sep, query = request.partition("?")
    if not sep:
        return head
    names = [name for name, _ in parse_qsl(query.split(" ", 1)[0], keep_blank_values=True)]
    return f"{head}?{'&'.join(f'{name}=…' for name in names)}"


def search_path(resource_type: str, params: SearchParams) -> str:
    """'Observation?patient=x&code=http://loinc.org|2986-8,...' with FHIR syntax left readable."""
    pairs = list(params.items()) if isinstance(params, Mapping) else list(params)
    if not pairs:
        return resource_type
    return f"{resource_type}?{urlencode(pairs, safe=QUERY_SAFE, quote_via=quote)}"


def next_link(bundle: Resource) -> str | None:
    for link in bundle.get("link") or []:
        if isinstance(link, dict) and link.get("relation") == "next":
            url = link.get("url")
            return url if isinstance(url, str) and url else None
    return None


def parse_status(status: Any) -> int | None:
    """The code of a Bundle entry status: '201 Created' (HAPI) and '201' (Medplum) alike."""
    if not isinstance(status, str):
        return None
    head = status.strip().split(" ", 1)[0]
    return int(head) if head.isdigit() and len(head) == 3 else None


def parse_location(location: str) -> Location | None:
    """Type, id and version of a Location: absolute or relative, with or without _history."""
    match = _LOCATION.search(location.split("?", 1)[0].rstrip("/"))
    if match is None:
        return None
    return Location(match["type"], match["id"], match["version"])


def etag_for(version_id: str) -> str:
    """The If-Match value for a version id: W/"3"."""
    return f'W/"{version_id}"'


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After header: delay-seconds or an HTTP-date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, moment.timestamp() - now)


def parse_resource(response: Answer, request: str, patient: str | None) -> Resource | None:
    """The FHIR resource in a response body (None for an empty body); FhirBadResponse otherwise,
    also for JSON nested deeper than any FHIR resource (limits.MAX_JSON_DEPTH)."""
    if not response.content.strip():
        return None
    try:
        body = response.json()
    except TooDeep as exc:
        raise FhirBadResponse(
            f"the server's answer is not usable: {exc}",
            status=response.status_code,
            request=request,
            patient=patient,
        ) from None
    except ValueError as exc:
        raise FhirBadResponse(
            "the server's answer is not valid JSON",
            status=response.status_code,
            request=request,
            patient=patient,
        ) from exc
    if not isinstance(body, dict) or not isinstance(body.get("resourceType"), str):
        raise FhirBadResponse(
            "the server's answer is not a FHIR resource (no resourceType)",
            status=response.status_code,
            request=request,
            patient=patient,
        )
    return body


def json_or_none(response: Answer) -> Any:
    try:
        return response.json()
    except ValueError:  # TooDeep too: an error body nested that deep is quoted as nothing
        return None


def as_object(value: Any) -> dict[str, Any]:
    """A JSON object, or an empty one for anything else: tolerant reading of server answers."""
    return value if isinstance(value, dict) else {}
