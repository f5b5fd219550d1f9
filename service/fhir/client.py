"""FhirClient: one FHIR server as the screener sees it (read, search, batch, write).

The work is done in modules of one concern each, which this front composes (it holds one
Transport and passes it to the others, rather than inheriting a tower of mixins, so each module
can be read and tested alone):

- transport.py: each exchange: origin checks, retries (retry.py: what is retried, and how long
  to wait), re-authorisation, redirects, answer limits, errors with our secrets taken out;
- session.py: the pooled `requests` session, its headers, the TLS choice;
- paging.py: search paging, `follow()`;
- batching.py: one `batch` of GETs, and the one-by-one fallback when a server refuses it;
- writes.py: create, update, transaction;
- http_parse.py: pure reading of statuses, Locations, ETags, links and bodies.

Everything a server can get wrong is turned into a FhirError (errors.py) that quotes the server
and names the request and patient; callers never see a `requests` exception or a raw status.
The names other modules import from here (RetryPolicy, WriteResult, search_path, ...) are
re-exported, so `from service.fhir.client import ...` stays the one import for callers.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Generic, TypeVar, cast, overload
from urllib.parse import quote

import requests

from service.config import BATCH_MODES
from service.fhir import batching, paging, writes
from service.fhir.auth import Auth, NoAuth
from service.fhir.batch_mode import BatchMode
from service.fhir.errors import FhirError
from service.fhir.http_parse import (
    QUERY_SAFE,
    Answer,
    Location,
    Resource,
    SearchParams,
    WriteResult,
    etag_for,
    loggable,
    next_link,
    origin_of,
    parse_location,
    parse_retry_after,
    parse_status,
    search_path,
)
from service.fhir.limits import DEFAULT_DEADLINE_S, DEFAULT_MAX_ANSWER_BYTES, AnswerLimits
from service.fhir.paging import DEFAULT_MAX_PAGES
from service.fhir.retry import DROPPED, TEMPORARY_STATUSES, UNPROCESSED_STATUSES, RetryPolicy
from service.fhir.session import FHIR_JSON, USER_AGENT, fhir_session
from service.fhir.transport import (
    DEFAULT_TIMEOUT,
    MAX_REDIRECTS,
    REDIRECT_STATUSES,
    Timeout,
    Transport,
)
from service.fhir.writes import IDEMPOTENT_METHODS

__all__ = [
    "DEFAULT_MAX_PAGES",
    "DEFAULT_TIMEOUT",
    "DROPPED",
    "FHIR_JSON",
    "IDEMPOTENT_METHODS",
    "MAX_REDIRECTS",
    "QUERY_SAFE",
    "REDIRECT_STATUSES",
    "TEMPORARY_STATUSES",
    "UNPROCESSED_STATUSES",
    "USER_AGENT",
    "Answer",
    "FhirClient",
    "Location",
    "Resource",
    "RetryPolicy",
    "SearchParams",
    "Timeout",
    "WriteResult",
    "etag_for",
    "loggable",
    "next_link",
    "origin_of",
    "parse_location",
    "parse_retry_after",
    "parse_status",
    "search_path",
]


T = TypeVar("T")


class _OnTransport(Generic[T]):
    """A client attribute that lives on its transport: read and replaced through the client."""

    def __set_name__(self, owner: type[Any], name: str) -> None:
        self._name = name

    @overload
    def __get__(self, client: None, owner: type[Any]) -> _OnTransport[T]: ...

    @overload
    def __get__(self, client: FhirClient, owner: type[Any] | None = None) -> T: ...

    def __get__(
        self, client: FhirClient | None, owner: type[Any] | None = None
    ) -> T | _OnTransport[T]:
        if client is None:  # on the class (introspection, mock specs): the descriptor itself
            return self
        return cast(T, getattr(client._http, self._name))

    def __set__(self, client: FhirClient, value: T) -> None:
        setattr(client._http, self._name, value)


class FhirClient:
    """A FHIR R4 REST client for one server, safe to share between threads.

    `request_count` counts HTTP requests to the FHIR server (retries and redirect hops included,
    token requests to the authorisation server not), so a test can assert how many round trips
    a screen costs. `batch_mode` and `batch_mode_reason` say how patients are read and why.
    `policy`, `timeout` and `max_pages` may be replaced on a client in use.
    """

    def __init__(
        self,
        base_url: str,
        auth: Auth | None = None,
        *,
        timeout: Timeout = DEFAULT_TIMEOUT,
        retries: int = 4,
        backoff_factor: float = 0.5,
        max_retry_wait: float = 30.0,
        verify: bool | str | os.PathLike[str] = True,
        pool_size: int = 16,
        max_pages: int = DEFAULT_MAX_PAGES,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
        user_agent: str = USER_AGENT,
        batch: str = "auto",
        max_answer_bytes: int = DEFAULT_MAX_ANSWER_BYTES,
        deadline_s: float = DEFAULT_DEADLINE_S,
    ) -> None:
        if batch not in BATCH_MODES:
            raise ValueError(f"batch: expected one of {', '.join(BATCH_MODES)}, not {batch!r}")
        self._batch = BatchMode(batch)
        self._http = Transport(
            base_url,
            auth if auth is not None else NoAuth(),
            fhir_session(session, pool_size, user_agent),
            RetryPolicy(retries, backoff_factor, max_retry_wait),
            AnswerLimits(max_answer_bytes, deadline_s),
            timeout=timeout,
            verify=verify,
            sleep=sleep,
            clock=clock,
        )
        self.base_url = self._http.base_url
        self.origin = self._http.origin
        self.auth = self._http.auth
        self.limits = self._http.limits
        self.secrets = self._http.secrets
        self.max_pages = max_pages
        self._lock = threading.Lock()
        self._capabilities: Resource | None = None

    def __repr__(self) -> str:
        return f"FhirClient({self.base_url!r}, auth={self.auth!r})"

    def __enter__(self) -> FhirClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    @property
    def request_count(self) -> int:
        return self._http.request_count

    # replaceable on a client in use (e.g. no retries for a test's outage); the transport
    # reads them on every request
    policy: _OnTransport[RetryPolicy] = _OnTransport()
    timeout: _OnTransport[Timeout] = _OnTransport()

    # --- what the server can do -------------------------------------------------------------

    def capabilities(self, *, refresh: bool = False) -> Resource:
        """The server's CapabilityStatement (GET metadata), fetched once per client.

        `refresh` asks the server again (a readiness probe wants a live answer). Once known,
        errors quote the server by its software name ('HAPI FHIR Server said: ...').
        """
        with self._lock:
            cached = None if refresh else self._capabilities
        if cached is not None:
            return cached
        statement = self._http.get("metadata", None, "CapabilityStatement")
        with self._lock:
            self._capabilities = statement
            self._http.speaker = _software_name(statement)
        return statement

    @property
    def batch_setting(self) -> str:
        """MEDCARE_FHIR_BATCH as configured: auto, always or never."""
        return self._batch.setting

    @property
    def batch_mode(self) -> str:
        """How patients are read: 'batch', 'concurrent searches' or (auto, before the first
        patient) 'not decided yet'."""
        return self._batch.mode

    @property
    def batch_mode_reason(self) -> str:
        """Why: the setting, or what the server did with the first batch (auto)."""
        return self._batch.reason

    def supports_batch(self) -> bool:
        """Whether to read a patient in one `batch`: as configured ("always", "never"), else
        (auto) yes until the first batch was refused; that first batch is the probe (stock
        HAPI accepts batch without declaring it, so the CapabilityStatement cannot decide).
        The statement is still fetched here, once: the reason quotes it."""
        if self._batch.setting == "auto":
            self.declares_batch()
        return self._batch.use_batch()

    def declares_batch(self) -> bool:
        """Whether the CapabilityStatement lists the `batch` system interaction."""
        return any(
            isinstance(item, dict) and item.get("code") == "batch"
            for rest in self._server_rests()
            for item in rest.get("interaction") or []
        )

    def supports_type(self, resource_type: str) -> bool:
        """Whether the CapabilityStatement lists the type; True when it lists no types at all
        (some statements are trimmed), so that only an explicit omission skips a search."""
        listed = {
            resource.get("type")
            for rest in self._server_rests()
            for resource in rest.get("resource") or []
            if isinstance(resource, dict)
        }
        return not listed or resource_type in listed

    # --- reading ----------------------------------------------------------------------------

    def read(self, resource_type: str, resource_id: str, patient: str | None = None) -> Resource:
        path = f"{resource_type}/{quote(resource_id, safe='')}"
        return self._http.get(path, patient, resource_type)

    def vread(
        self, resource_type: str, resource_id: str, version_id: str, patient: str | None = None
    ) -> Resource:
        path = (
            f"{resource_type}/{quote(resource_id, safe='')}/_history/{quote(version_id, safe='')}"
        )
        return self._http.get(path, patient, resource_type)

    def search(
        self, resource_type: str, params: SearchParams, patient: str | None = None
    ) -> Iterator[Resource]:
        """Every matched and included resource of a search, following `next` links to the end."""
        yield from self.search_pages(resource_type, params, patient)[1]

    def search_pages(
        self, resource_type: str, params: SearchParams, patient: str | None = None
    ) -> tuple[Resource, Iterator[Resource]]:
        """The first page of a search, read now, and its resources and the later pages' (as
        `search`): a sweep needs the Bundle's meta.lastUpdated, the server's own clock."""
        url = self._http.url(search_path(resource_type, params))
        bundle = self._http.get(url, patient, "Bundle")
        return bundle, self.follow(bundle, self._http.describe("GET", url), patient, first_url=url)

    def follow(
        self,
        bundle: Resource,
        request: str,
        patient: str | None = None,
        *,
        first_url: str | None = None,
    ) -> Iterator[Resource]:
        """The resources of a searchset Bundle and of every page after it (paging.py).

        A `next` link is followed only to the configured origin (scheme, host and port, as
        `requests` will connect: origin.py): a link elsewhere, or with userinfo, would hand our
        credentials to another host, so it raises FhirRefusedLink. A link already
        followed ends the paging with a warning instead of looping for ever; a server that
        keeps handing out new links is stopped after `max_pages` pages with FhirBadResponse
        (the record would be incomplete, so it is an error, not a warning). HAPI `_getpages`
        and Medplum `_offset` links are both just URLs to follow.
        """
        return paging.follow(
            self._http, bundle, request, patient, first_url=first_url, max_pages=self.max_pages
        )

    # --- batch and transaction --------------------------------------------------------------

    def batch(self, requests_: Sequence[str], patient: str | None = None) -> list[Resource]:
        """GET each relative URL in one batch request; raises the first failed entry's error."""
        results = self.batch_results(requests_, patient)
        for result in results:
            if isinstance(result, FhirError):
                raise result
        return [result for result in results if not isinstance(result, FhirError)]

    def batch_results(
        self, requests_: Sequence[str], patient: str | None = None
    ) -> list[Resource | FhirError]:
        """Like batch(), but a failed entry is returned as its FhirError, in its place, so one
        missing Medication does not hide the others. Entry Bundles may have `next` links: pass
        them to follow().

        With MEDCARE_FHIR_BATCH=auto the first batch is a probe (see batch_mode.py): answered
        properly, batch is kept; refused (an error status that is not "try later" or "who are
        you", or an answer that is not a batch-response), the same GETs are made one by one so
        this patient is still read, and supports_batch() is False from then on."""
        return batching.batch_results(
            self._http, self._batch, requests_, patient, self._declared_if_read
        )

    def transaction(self, bundle: Resource, patient: str | None = None) -> Resource:
        """POST a transaction Bundle; the server applies all entries or none.

        Retried after a timeout only when every entry is idempotent (GET, PUT, DELETE, or a
        conditional create with ifNoneExist): the screener's writes are, so a dropped
        connection does not lose a write, and a plain POST entry is never sent twice.
        """
        return writes.transaction(self._http, bundle, patient)

    # --- writing single resources -----------------------------------------------------------

    def create(
        self, resource: Resource, *, if_none_exist: str | None = None, patient: str | None = None
    ) -> WriteResult:
        """POST a resource; with `if_none_exist` (a search query) a match is returned instead."""
        return writes.create(self._http, resource, if_none_exist, patient)

    def update(
        self,
        resource: Resource,
        *,
        conditional: str | None = None,
        if_match: str | None = None,
        patient: str | None = None,
    ) -> WriteResult:
        """PUT a resource by id, or by a search query (`conditional`: conditional update).

        `if_match` is an ETag (`W/"3"`, see etag_for) that makes the server refuse with 412
        (FhirConflict) when someone else changed the resource since we read it.
        """
        return writes.update(self._http, resource, conditional, if_match, patient)

    # --- internals --------------------------------------------------------------------------

    def _server_rests(self) -> list[dict[str, Any]]:
        rests = [rest for rest in self.capabilities().get("rest") or [] if isinstance(rest, dict)]
        return [rest for rest in rests if rest.get("mode") == "server"] or rests

    def _declared_if_read(self) -> bool | None:
        """What the CapabilityStatement says of batch, if it was read (None: not read)."""
        with self._lock:
            known = self._capabilities is not None
        return self.declares_batch() if known else None


def _software_name(statement: Resource) -> str:
    """Who to quote: the server's software name ('HAPI FHIR Server said: ...'), if it gives one."""
    software = statement.get("software")
    name = software.get("name") if isinstance(software, dict) else None
    return name if isinstance(name, str) and name.strip() else "FHIR server"
