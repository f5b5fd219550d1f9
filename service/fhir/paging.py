"""Search paging: the resources of a searchset Bundle and of every page after it.

Paging is where a server can lead a client astray: a `next` link to another host (our
credentials would follow it), a link already followed (a loop), or new links for ever (a
worker and a patient's record growing without end). `follow()` guards against each, and reads
HAPI `_getpages` and Medplum `_offset` links alike, as plain URLs to follow.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Final
from urllib.parse import urljoin

from service.fhir.errors import FhirBadResponse
from service.fhir.http_parse import Resource, loggable, next_link
from service.fhir.transport import Transport

log = logging.getLogger(__name__)

# A search whose `next` links go on past this many pages is cut with an error: a server that
# hands out new links for ever must not keep a worker (and the patient's record) growing.
DEFAULT_MAX_PAGES: Final = 1000


def follow(
    http: Transport,
    bundle: Resource,
    request: str,
    patient: str | None,
    *,
    first_url: str | None,
    max_pages: int,
) -> Iterator[Resource]:
    """The resources of `bundle` and of the pages after it (FhirClient.follow says the rules)."""
    followed = {first_url} if first_url else set()
    page, pages = bundle, 1
    while True:
        yield from matches(page, request)
        link = next_link(page)
        if link is None:
            return
        url = urljoin(http.base_url + "/", link)
        http.check_origin(url, request, patient, "follow a next link")
        if url in followed:
            log.warning(
                "%s: the server repeated a next link; paging stopped there", loggable(request)
            )
            return
        if pages >= max_pages:
            raise http.scrubbed(
                FhirBadResponse(
                    f"paging did not end after {pages} pages: the server keeps sending new "
                    "next links",
                    request=request,
                    patient=patient,
                )
            )
        followed.add(url)
        page = http.get(url, patient, "Bundle")
        pages += 1


def matches(bundle: Resource, request: str) -> Iterator[Resource]:
    """Resources of entries in search mode match or include (or none given); outcomes dropped."""
    warnings = 0
    for entry in bundle.get("entry") or []:
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
            continue
        mode = (entry.get("search") or {}).get("mode")
        if mode == "outcome" or resource["resourceType"] == "OperationOutcome":
            warnings += 1
        elif mode in (None, "match", "include"):
            yield resource
    if warnings:
        log.warning(
            "%s: the server attached %d OperationOutcome(s) to a page", loggable(request), warnings
        )
