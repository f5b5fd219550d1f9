"""The HTTP side of FHIR: one session, timeouts, retries, paging, batch and conditional writes.

Everything a server can get wrong is turned into a FhirError (errors.py) that quotes the server
and names the request and patient; callers never see a `requests` exception or a raw status.

Retries are a loop of our own around the session rather than a urllib3 `Retry` on the adapter:
the loop can count requests, sleep through an injected function (tests do not wait), re-authorise
once after a 401, and name the request in its log lines. What is retried is data (RetryPolicy).

Nothing the server sends is trusted about where to go (fhir-contract.md "Trust nothing the server
sends"): every URL is checked, as `requests` will connect to it, against the configured origin
before it is sent (origin.py), redirects are followed only within that origin, answers are read
under a size cap and a total deadline (limits.py), and every error passes through redact.py so
that a server quoting our Authorization header does not put our credentials in a message.
Log lines name requests without their query values (a run's search may hold names and dates).
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Final, NamedTuple, TypeVar
from urllib.parse import parse_qsl, quote, unquote, urlencode, urljoin

import requests
import urllib3.exceptions
from requests.adapters import HTTPAdapter

from service import __version__
from service.config import BATCH_MODES, ConfigError
from service.fhir.auth import Auth, NoAuth
from service.fhir.batch_mode import BatchMode
from service.fhir.deadline import install as watch_deadlines
from service.fhir.deadline import watching
from service.fhir.errors import (
    FhirAnswerTooLarge,
    FhirAuthError,
    FhirBadResponse,
    FhirError,
    FhirNetworkError,
    FhirRefusedLink,
    FhirRefusedRedirect,
    FhirTooSlow,
    status_error,
)
from service.fhir.limits import (
    ACCEPTED_ENCODINGS,
    DEFAULT_DEADLINE_S,
    DEFAULT_MAX_ANSWER_BYTES,
    AnswerLimits,
    AnswerTooLarge,
    AnswerTooSlow,
    AnswerUnreadable,
    TooDeep,
    parse_json,
    read_body,
)
from service.fhir.origin import UnsafeUrl, connect_origin, origin_or_none
from service.fhir.redact import Secrets

log = logging.getLogger(__name__)

Resource = dict[str, Any]
SearchParams = Sequence[tuple[str, str]] | Mapping[str, str]
Timeout = tuple[float, float]

DEFAULT_TIMEOUT: Final[Timeout] = (5.0, 30.0)  # (connect, read) seconds
# A search whose `next` links go on past this many pages is cut with an error: a server that
# hands out new links for ever must not keep a worker (and the patient's record) growing.
DEFAULT_MAX_PAGES: Final = 1000
# Failures where the answer never arrived whole: a timeout, a refused or dropped connection, or
# a connection reset in the middle of the body (requests calls that ChunkedEncodingError, even
# for a body framed by Content-Length).
DROPPED: Final = (
    requests.Timeout,
    requests.ConnectionError,
    requests.exceptions.ChunkedEncodingError,
)
USER_AGENT: Final = f"medcare-screen/{__version__}"
FHIR_JSON: Final = "application/fhir+json"
# Characters left readable in search URLs (and so in error messages): FHIR token syntax.
QUERY_SAFE: Final = ",|:/$"

# 408 and 429 say the server did not process the request; 5xx above may have been processed.
TEMPORARY_STATUSES: Final = frozenset({408, 429, 500, 502, 503, 504})
UNPROCESSED_STATUSES: Final = frozenset({408, 429})
# Methods whose repetition leaves the server as one attempt would (RFC 9110 §9.2.2).
IDEMPOTENT_METHODS: Final = frozenset({"GET", "HEAD", "PUT", "DELETE"})
# Concurrent GETs when a probe batch was refused and its requests are made one by one.
SEPARATE_WORKERS: Final = 6
# Redirects within the configured origin are followed this many hops at most.
MAX_REDIRECTS: Final = 5
REDIRECT_STATUSES: Final = frozenset({301, 302, 303, 307, 308})
E = TypeVar("E", bound=FhirError)

_LOCATION = re.compile(
    r"(?:^|/)(?P<type>[A-Z][A-Za-z]+)/(?P<id>[A-Za-z0-9\-.]{1,64})"
    r"(?:/_history/(?P<version>[A-Za-z0-9\-.]{1,64}))?/?$"
)


@dataclass(frozen=True)
class RetryPolicy:
    """What is retried and how long to wait: exponential backoff, or the server's Retry-After.

    Idempotent requests are retried on every temporary status, on timeouts and on dropped
    connections. Other requests (a plain create, a transaction with a plain POST entry) are
    retried only when the request cannot have been processed: 408, 429, or a connect timeout.
    Repeating them after a read timeout could create a second resource.
    """

    retries: int = 4
    backoff_factor: float = 0.5
    max_wait: float = 30.0
    statuses: frozenset[int] = TEMPORARY_STATUSES
    unprocessed_statuses: frozenset[int] = UNPROCESSED_STATUSES

    def retries_status(self, status: int, idempotent: bool) -> bool:
        return status in (self.statuses if idempotent else self.unprocessed_statuses)

    def retries_exception(self, exc: requests.RequestException, idempotent: bool) -> bool:
        if isinstance(exc, requests.exceptions.SSLError):
            return False  # a certificate problem does not heal by waiting
        if isinstance(exc, requests.ConnectTimeout):
            return True  # never reached the server
        return idempotent and isinstance(exc, DROPPED)

    def wait(self, retry: int, retry_after: str | None, now: float) -> float:
        """Seconds before retry number `retry` (1-based); Retry-After wins, both are capped."""
        hinted = parse_retry_after(retry_after, now)
        wait = hinted if hinted is not None else self.backoff_factor * 2 ** (retry - 1)
        return max(0.0, min(wait, self.max_wait))


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


class FhirClient:
    """A FHIR R4 REST client for one server, safe to share between threads.

    `request_count` counts HTTP requests to the FHIR server (retries and redirect hops included,
    token requests to the authorisation server not), so a test can assert how many round trips
    a screen costs. `batch_mode` and `batch_mode_reason` say how patients are read and why.
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
        self.base_url = base_url.rstrip("/")
        try:
            self.origin = connect_origin(self.base_url)
        except UnsafeUrl as exc:
            raise ConfigError(f"the FHIR base URL is not usable: {exc}") from exc
        self.auth = auth if auth is not None else NoAuth()
        self.timeout = timeout
        self.policy = RetryPolicy(retries, backoff_factor, max_retry_wait)
        self.max_pages = max_pages
        self.limits = AnswerLimits(max_answer_bytes, deadline_s)
        # every credential sent is remembered here and taken out of every error (redact.py)
        self.secrets = Secrets()
        self._verify = _tls_verify(verify, self.base_url)
        self._sleep = sleep
        self._clock = clock
        self._session = session if session is not None else _pooled_session(pool_size)
        # no-cache: a screen must see what was written a moment ago (HAPI otherwise reuses a
        # search's results for 60 s, even across new writes)
        # Accept-Encoding: only what limits.py decompresses with a bound
        self._session.headers.update(
            {
                "Accept": FHIR_JSON,
                "User-Agent": user_agent,
                "Cache-Control": "no-cache",
                "Accept-Encoding": ACCEPTED_ENCODINGS,
            }
        )
        self.auth.bind(self.base_url, self._session, timeout=timeout, verify=self._verify)
        self._lock = threading.Lock()
        self._request_count = 0
        self._capabilities: Resource | None = None

    def __repr__(self) -> str:
        return f"FhirClient({self.base_url!r}, auth={self.auth!r})"

    def __enter__(self) -> FhirClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._session.close()

    @property
    def request_count(self) -> int:
        with self._lock:
            return self._request_count

    # --- what the server can do -------------------------------------------------------------

    def capabilities(self, *, refresh: bool = False) -> Resource:
        """The server's CapabilityStatement (GET metadata), fetched once per client.

        `refresh` asks the server again (a readiness probe wants a live answer).
        """
        with self._lock:
            cached = None if refresh else self._capabilities
        if cached is not None:
            return cached
        statement = self._get("metadata", None, "CapabilityStatement")
        with self._lock:
            self._capabilities = statement
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
        return self._get(f"{resource_type}/{quote(resource_id, safe='')}", patient, resource_type)

    def vread(
        self, resource_type: str, resource_id: str, version_id: str, patient: str | None = None
    ) -> Resource:
        path = (
            f"{resource_type}/{quote(resource_id, safe='')}/_history/{quote(version_id, safe='')}"
        )
        return self._get(path, patient, resource_type)

    def search(
        self, resource_type: str, params: SearchParams, patient: str | None = None
    ) -> Iterator[Resource]:
        """Every matched and included resource of a search, following `next` links to the end."""
        url = self._url(search_path(resource_type, params))
        bundle = self._get(url, patient, "Bundle")
        yield from self.follow(bundle, self._describe("GET", url), patient, first_url=url)

    def follow(
        self,
        bundle: Resource,
        request: str,
        patient: str | None = None,
        *,
        first_url: str | None = None,
    ) -> Iterator[Resource]:
        """The resources of a searchset Bundle and of every page after it.

        A `next` link is followed only to the configured origin (scheme, host and port, as
        `requests` will connect: origin.py): a link elsewhere, or with userinfo, would hand our
        credentials to another host, so it raises FhirRefusedLink. A link already
        followed ends the paging with a warning instead of looping for ever; a server that
        keeps handing out new links is stopped after `max_pages` pages with FhirBadResponse
        (the record would be incomplete, so it is an error, not a warning). HAPI `_getpages`
        and Medplum `_offset` links are both just URLs to follow.
        """
        followed = {first_url} if first_url else set()
        page, pages = bundle, 1
        while True:
            yield from _matches(page, request)
            link = next_link(page)
            if link is None:
                return
            url = urljoin(self.base_url + "/", link)
            self._check_origin(url, request, patient, "follow a next link")
            if url in followed:
                log.warning(
                    "%s: the server repeated a next link; paging stopped there",
                    loggable(request),
                )
                return
            if pages >= self.max_pages:
                raise self._scrubbed(
                    FhirBadResponse(
                        f"paging did not end after {pages} pages: the server keeps sending new "
                        "next links",
                        request=request,
                        patient=patient,
                    )
                )
            followed.add(url)
            page = self._get(url, patient, "Bundle")
            pages += 1

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
        if not requests_:
            return []
        if not self._batch.probing:
            return self._batch_results(requests_, patient)
        try:
            results = self._batch_results(requests_, patient)
        except FhirError as exc:
            if not _refuses_batch(exc):
                raise
            self._batch.refused(exc.summary)
            log.warning("the FHIR server refused a batch: reading with concurrent searches")
            return self._separately(requests_, patient)
        with self._lock:
            known = self._capabilities is not None
        self._batch.kept(self.declares_batch() if known else None)
        return results

    def _batch_results(
        self, requests_: Sequence[str], patient: str | None
    ) -> list[Resource | FhirError]:
        bundle = {
            "resourceType": "Bundle",
            "type": "batch",
            "entry": [{"request": {"method": "GET", "url": url}} for url in requests_],
        }
        request = f"POST batch of {len(requests_)} GET requests"
        response = self._post("", bundle, request, patient, idempotent=True)
        answer = _parse(response, request, patient)
        if answer is None or answer["resourceType"] != "Bundle":
            sent = answer["resourceType"] if answer else "an empty body"
            raise self._answer_error(
                _NotABatchResponse,
                f"expected a batch-response Bundle, the server sent {sent}",
                response,
                request,
                patient,
            )
        entries = _response_entries(answer, len(requests_), request, patient)
        return [
            self._entry_result(entry, f"GET {url} (in a batch)", patient)
            for url, entry in zip(requests_, entries, strict=True)
        ]

    def _separately(
        self, requests_: Sequence[str], patient: str | None
    ) -> list[Resource | FhirError]:
        """What a batch of these GETs would have given, one request each (concurrently)."""

        def get(url: str) -> Resource | FhirError:
            try:
                return self._get(url, patient, _expected_type(url))
            except FhirError as exc:
                return exc

        workers = min(len(requests_), SEPARATE_WORKERS)
        with ThreadPoolExecutor(workers, thread_name_prefix="fhir-get") as pool:
            return list(pool.map(get, requests_))

    def transaction(self, bundle: Resource, patient: str | None = None) -> Resource:
        """POST a transaction Bundle; the server applies all entries or none.

        Retried after a timeout only when every entry is idempotent (GET, PUT, DELETE, or a
        conditional create with ifNoneExist): the screener's writes are, so a dropped
        connection does not lose a write, and a plain POST entry is never sent twice.
        """
        entries = [entry for entry in bundle.get("entry") or [] if isinstance(entry, dict)]
        idempotent = all(_idempotent_entry(entry) for entry in entries)
        request = f"POST transaction of {len(entries)} entries"
        response = self._post("", bundle, request, patient, idempotent=idempotent)
        return self._expect(response, request, patient, "Bundle")

    # --- writing single resources -----------------------------------------------------------

    def create(
        self, resource: Resource, *, if_none_exist: str | None = None, patient: str | None = None
    ) -> WriteResult:
        """POST a resource; with `if_none_exist` (a search query) a match is returned instead."""
        resource_type = _type_of(resource)
        headers = {"Prefer": "return=representation"}
        if if_none_exist:
            headers["If-None-Exist"] = if_none_exist
        request = f"POST {resource_type}" + (
            f" (If-None-Exist: {if_none_exist})" if if_none_exist else ""
        )
        response = self._post(
            resource_type,
            resource,
            request,
            patient,
            idempotent=bool(if_none_exist),
            headers=headers,
        )
        return self._write_result(response, request, patient, resource_type)

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
        resource_type = _type_of(resource)
        if conditional:
            path = f"{resource_type}?{conditional}"
        elif isinstance(resource.get("id"), str):
            path = f"{resource_type}/{quote(resource['id'], safe='')}"
        else:
            raise ValueError("update() needs a resource with an id, or a conditional query")
        headers = {"Prefer": "return=representation", "Content-Type": FHIR_JSON}
        if if_match:
            headers["If-Match"] = if_match
        request = f"PUT {path}"
        response = self._send(
            "PUT",
            self._url(path),
            request,
            patient,
            idempotent=True,
            data=json.dumps(resource).encode("utf-8"),
            headers=headers,
        )
        return self._write_result(response, request, patient, resource_type)

    # --- internals --------------------------------------------------------------------------

    def _server_rests(self) -> list[dict[str, Any]]:
        rests = [rest for rest in self.capabilities().get("rest") or [] if isinstance(rest, dict)]
        return [rest for rest in rests if rest.get("mode") == "server"] or rests

    def _speaker(self) -> str:
        """Who to quote: the server's software name once known ('HAPI FHIR Server said: ...')."""
        with self._lock:
            software = (self._capabilities or {}).get("software")
        name = software.get("name") if isinstance(software, dict) else None
        return name if isinstance(name, str) and name.strip() else "FHIR server"

    def _url(self, path_or_url: str) -> str:
        if path_or_url.startswith(("http://", "https://")):
            return path_or_url
        return f"{self.base_url}/{path_or_url}" if path_or_url else self.base_url

    def _describe(self, method: str, url: str) -> str:
        """'GET Observation?patient=x&code=...': relative to the base, readable, for messages."""
        relative = url[len(self.base_url) :].lstrip("/") if url.startswith(self.base_url) else url
        return f"{method} {unquote(relative)}"

    def _get(self, path_or_url: str, patient: str | None, resource_type: str) -> Resource:
        """GET one resource of the expected type (a Bundle for searches and pages)."""
        url = self._url(path_or_url)
        request = self._describe("GET", url)
        response = self._send("GET", url, request, patient, idempotent=True)
        return self._expect(response, request, patient, resource_type)

    def _post(
        self,
        path: str,
        body: Resource,
        request: str,
        patient: str | None,
        *,
        idempotent: bool,
        headers: Mapping[str, str] | None = None,
    ) -> Answer:
        return self._send(
            "POST",
            self._url(path),
            request,
            patient,
            idempotent=idempotent,
            data=json.dumps(body).encode("utf-8"),
            headers={"Content-Type": FHIR_JSON, **(headers or {})},
        )

    def _send(
        self,
        method: str,
        url: str,
        request: str,
        patient: str | None,
        *,
        idempotent: bool,
        **kwargs: Any,
    ) -> Answer:
        """One logical request: retried per the policy, re-authorised once after a 401,
        redirected only within the configured origin. Every URL it sends to is checked first."""
        retry = 0
        reauthorised = False
        hops = 0
        while True:
            self._check_origin(url, request, patient, "send a request")
            with self._lock:
                self._request_count += 1
            try:
                response = self._exchange(method, url, request, patient, **kwargs)
            except requests.RequestException as exc:
                if retry < self.policy.retries and self.policy.retries_exception(exc, idempotent):
                    retry += 1
                    self._pause(request, patient, _failure_kind(exc), retry, None)
                    continue
                raise self._scrubbed(_network_error(exc, retry + 1, request, patient)) from exc
            status = response.status_code
            location = response.headers.get("Location")
            if status in REDIRECT_STATUSES and location:
                url, method = self._redirect(method, url, status, location, request, patient)
                if method == "GET":
                    kwargs.pop("data", None)
                hops += 1
                if hops > MAX_REDIRECTS:
                    raise self._scrubbed(
                        FhirBadResponse(
                            f"more than {MAX_REDIRECTS} redirects",
                            status=status,
                            request=request,
                            patient=patient,
                        )
                    )
                continue
            if status == 401 and not reauthorised and self.auth.invalidate():
                reauthorised = True  # a fresh token is not a retry: it does not count
                log.info("%s: HTTP 401, retrying once with fresh credentials", loggable(request))
                continue
            if retry < self.policy.retries and self.policy.retries_status(status, idempotent):
                retry += 1
                self._pause(
                    request, patient, f"HTTP {status}", retry, response.headers.get("Retry-After")
                )
                continue
            if 200 <= status < 300:
                return response
            raise self._scrubbed(
                status_error(
                    status,
                    response.reason,
                    body=_json_or_none(response),
                    request=request,
                    patient=patient,
                    speaker=self._speaker(),
                    temporary_statuses=self.policy.statuses,
                )
            )

    def _exchange(
        self, method: str, url: str, request: str, patient: str | None, **kwargs: Any
    ) -> Answer:
        """One HTTP exchange: no redirect followed by `requests`, the body read under the
        answer limits (size after decompression, total deadline), the connection released.

        Raises requests exceptions for network failures (the caller's retry policy decides)
        and FhirAnswerTooLarge / FhirTooSlow / FhirBadResponse for answers over the limits."""
        deadline_at = time.monotonic() + self.limits.deadline_s
        timeout = (self.timeout[0], min(self.timeout[1], self.limits.deadline_s))
        with watching(self.limits.deadline_s) as watch:  # the status line and headers too
            try:
                response = self._session.request(
                    method,
                    url,
                    auth=self.auth,
                    timeout=timeout,
                    verify=self._verify,
                    allow_redirects=False,
                    stream=True,
                    **kwargs,
                )
            except requests.RequestException:
                if watch.fired:  # the deadline cut the connection while headers dripped in
                    raise self._too_slow(None, request, patient) from None
                raise
            try:
                self.secrets.learn_authorization(response.request.headers.get("Authorization"))
                if response.status_code in REDIRECT_STATUSES and response.headers.get("Location"):
                    content = b""  # not read: the redirect is judged by its Location alone
                else:
                    content = read_body(response.raw, response.headers, self.limits, deadline_at)
                if watch.fired:  # the body may have ended only because the deadline cut it
                    raise AnswerTooSlow()
            except AnswerTooSlow:
                raise self._too_slow(response.status_code, request, patient) from None
            except AnswerTooLarge as exc:
                raise self._scrubbed(
                    FhirAnswerTooLarge(
                        str(exc), status=response.status_code, request=request, patient=patient
                    )
                ) from None
            except AnswerUnreadable as exc:
                raise self._scrubbed(
                    FhirBadResponse(
                        str(exc), status=response.status_code, request=request, patient=patient
                    )
                ) from None
            except urllib3.exceptions.HTTPError as exc:
                if watch.fired:
                    raise self._too_slow(response.status_code, request, patient) from None
                raise _as_requests_exception(exc) from exc
            finally:
                response.close()
        return Answer(
            response.status_code,
            response.reason or "",
            response.headers,
            content,
            self.limits.max_depth,
        )

    def _too_slow(self, status: int | None, request: str, patient: str | None) -> FhirTooSlow:
        return self._scrubbed(
            FhirTooSlow(
                f"the answer was not complete after {self.limits.deadline_s:g} s "
                "(MEDCARE_FHIR_DEADLINE_S)",
                status=status,
                request=request,
                patient=patient,
            )
        )

    def _redirect(
        self, method: str, url: str, status: int, location: str, request: str, patient: str | None
    ) -> tuple[str, str]:
        """Where a redirect within the configured origin goes, and with which method.

        307/308 keep the method and body; 301/302/303 turn a GET into a GET and are refused for
        anything else (a batch or a write-back must not silently become a GET). A redirect to
        another origin is refused: it would carry our credentials and the body elsewhere."""
        target = urljoin(url, location)
        where = origin_or_none(target)
        if where != self.origin:
            raise self._scrubbed(
                FhirRefusedRedirect(
                    f"refused to follow a redirect ({status}) to "
                    f"{where or 'a URL with userinfo or an ambiguous host'}: redirects are "
                    f"followed only within the configured server {self.origin}",
                    status=status,
                    request=request,
                    patient=patient,
                )
            )
        if status in (307, 308) or method in ("GET", "HEAD"):
            return target, method
        raise self._scrubbed(
            FhirRefusedRedirect(
                f"refused to follow a redirect ({status}) that would turn {method} into GET",
                status=status,
                request=request,
                patient=patient,
            )
        )

    def _check_origin(self, url: str, request: str, patient: str | None, doing: str) -> None:
        """FhirRefusedLink unless `url` connects to the configured origin (origin.py)."""
        try:
            where = connect_origin(url)
        except UnsafeUrl as exc:
            raise self._scrubbed(
                FhirRefusedLink(
                    f"refused to {doing}: {exc}; the configured server is {self.origin}",
                    request=request,
                    patient=patient,
                )
            ) from None
        if where != self.origin:
            raise self._scrubbed(
                FhirRefusedLink(
                    f"refused to {doing} to {where}: the configured server is {self.origin}",
                    request=request,
                    patient=patient,
                )
            )

    def _scrubbed(self, error: E) -> E:
        """Every FhirError this client raises or returns passes here: our secrets taken out."""
        return self.secrets.scrub_error(error)

    def _answer_error(
        self, kind: type[E], summary: str, response: Answer, request: str, patient: str | None
    ) -> E:
        """An error about a server's answer: its status, the request and the patient said, our
        secrets taken out. One place, so no such error leaves without the scrub."""
        return self._scrubbed(
            kind(summary, status=response.status_code, request=request, patient=patient)
        )

    def _pause(
        self, request: str, patient: str | None, why: str, retry: int, retry_after: str | None
    ) -> None:
        wait = self.policy.wait(retry, retry_after, self._clock())
        log.warning(
            "%s%s: %s; retry %d of %d in %.1f s",
            loggable(request),
            f" for Patient/{patient.removeprefix('Patient/')}" if patient else "",
            why,
            retry,
            self.policy.retries,
            wait,
        )
        self._sleep(wait)

    def _expect(
        self, response: Answer, request: str, patient: str | None, resource_type: str
    ) -> Resource:
        resource = _parse(response, request, patient)
        if resource is None:
            raise FhirBadResponse(
                "the server answered with an empty body",
                status=response.status_code,
                request=request,
                patient=patient,
            )
        if resource["resourceType"] != resource_type:
            raise self._answer_error(
                FhirBadResponse,
                f"expected a {resource_type}, the server sent a {resource['resourceType']}",
                response,
                request,
                patient,
            )
        return resource

    def _write_result(
        self, response: Answer, request: str, patient: str | None, resource_type: str
    ) -> WriteResult:
        body = _parse(response, request, patient)
        resource = body if body and body.get("resourceType") == resource_type else None
        return WriteResult(
            resource,
            response.status_code,
            response.headers.get("Location") or response.headers.get("Content-Location"),
            response.headers.get("ETag"),
        )

    def _entry_result(
        self, entry: dict[str, Any], request: str, patient: str | None
    ) -> Resource | FhirError:
        answer = _object(entry.get("response"))
        status = parse_status(answer.get("status"))
        resource = entry.get("resource")
        if status is None:
            return FhirBadResponse(
                "a batch entry has no readable response.status", request=request, patient=patient
            )
        if 200 <= status < 300:
            if isinstance(resource, dict) and isinstance(resource.get("resourceType"), str):
                return resource
            return FhirBadResponse(
                "a successful batch entry carries no resource",
                status=status,
                request=request,
                patient=patient,
            )
        outcome = answer.get("outcome") or resource
        reason = str(answer.get("status")).partition(" ")[2]
        return self._scrubbed(
            status_error(
                status,
                reason,
                body=outcome,
                request=request,
                patient=patient,
                speaker=self._speaker(),
                temporary_statuses=self.policy.statuses,
            )
        )


# --- pure helpers (public where other modules and tests use them) ------------------------------


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


def _pooled_session(pool_size: int) -> requests.Session:
    """A session whose connection pool fits the concurrent searches of a screen."""
    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=pool_size, pool_maxsize=pool_size, max_retries=0)
    watch_deadlines(adapter)  # a total deadline per exchange, headers included (deadline.py)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


def _tls_verify(verify: bool | str | os.PathLike[str], base_url: str) -> bool | str:
    """True, a CA bundle that exists, or False: allowed (Settings permits it in development
    mode only) but never silent: every client made that way says so in the log."""
    if verify is True:
        return True
    if verify is False:
        log.warning("TLS certificate verification is OFF for %s: development only", base_url)
        return False
    path = Path(verify)
    if not path.is_file():
        raise ConfigError(f"MEDCARE_TLS_CA_BUNDLE: the CA bundle {path} is not a file")
    return str(path)


def _parse(response: Answer, request: str, patient: str | None) -> Resource | None:
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


def _json_or_none(response: Answer) -> Any:
    try:
        return response.json()
    except ValueError:  # TooDeep too: an error body nested that deep is quoted as nothing
        return None


class _NotABatchResponse(FhirBadResponse):
    """A 2xx answer to a batch that is not a batch-response: the server does not do batch."""


def _refuses_batch(exc: FhirError) -> bool:
    """Whether a failed probe batch means "this server does not do batch": an error status that
    is neither "try again later" (temporary) nor "who are you" (401), or a 2xx answer of another
    shape. Broken or oversized answers and refused links decide nothing."""
    if isinstance(exc, _NotABatchResponse):
        return True
    if exc.status is None or exc.status < 400 or isinstance(exc, FhirRefusedLink):
        return False
    if isinstance(exc, FhirNetworkError) and exc.temporary:
        return False
    return not (isinstance(exc, FhirAuthError) and exc.status == 401)


def _expected_type(url: str) -> str:
    """The resource type a relative GET of a batch entry answers: a Bundle for a search."""
    path, sep, _ = url.partition("?")
    resource_type, slash, _ = path.partition("/")
    return resource_type if slash and not sep else "Bundle"


def _as_requests_exception(exc: urllib3.exceptions.HTTPError) -> requests.RequestException:
    """The requests exception that requests itself raises for a urllib3 failure while a body is
    read, so that the retry policy and the messages treat a streamed body as before."""
    if isinstance(exc, urllib3.exceptions.ReadTimeoutError):
        return requests.exceptions.ReadTimeout(str(exc))
    if isinstance(exc, urllib3.exceptions.SSLError):
        return requests.exceptions.SSLError(str(exc))
    if isinstance(exc, urllib3.exceptions.ProtocolError | urllib3.exceptions.DecodeError):
        return requests.exceptions.ChunkedEncodingError(str(exc))
    return requests.ConnectionError(str(exc))


def _matches(bundle: Resource, request: str) -> Iterator[Resource]:
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


def _response_entries(
    answer: Resource, expected: int, request: str, patient: str | None
) -> list[dict[str, Any]]:
    """The batch-response entries, one per request in order.

    Some HAPI versions put an informational OperationOutcome ("Batch completed in 15ms") first,
    without a `response`; it is dropped so positions line up with the requests again.
    """
    entries = [entry for entry in answer.get("entry") or [] if isinstance(entry, dict)]
    if len(entries) == expected + 1 and "response" not in entries[0]:
        entries = entries[1:]
    if len(entries) != expected:
        raise FhirBadResponse(
            f"the batch response has {len(entries)} entries for {expected} requests",
            request=request,
            patient=patient,
        )
    return entries


def _idempotent_entry(entry: dict[str, Any]) -> bool:
    request = _object(entry.get("request"))
    method = str(request.get("method", "")).upper()
    return method in IDEMPOTENT_METHODS or (method == "POST" and bool(request.get("ifNoneExist")))


def _object(value: Any) -> dict[str, Any]:
    """A JSON object, or an empty one for anything else: tolerant reading of server answers."""
    return value if isinstance(value, dict) else {}


def _type_of(resource: Resource) -> str:
    resource_type = resource.get("resourceType")
    if not isinstance(resource_type, str) or not resource_type:
        raise ValueError("the resource has no resourceType")
    return resource_type


def _failure_kind(exc: requests.RequestException) -> str:
    if isinstance(exc, requests.ConnectTimeout):
        return "connect timeout"
    if isinstance(exc, requests.Timeout):
        return "read timeout"
    if isinstance(exc, requests.exceptions.SSLError):
        return "TLS verification failed (configure a CA bundle for a private CA)"
    if isinstance(exc, requests.ConnectionError):
        return "connection failed"
    if isinstance(exc, requests.exceptions.ChunkedEncodingError):
        return "connection dropped in the middle of the answer"
    return type(exc).__name__


def _network_error(
    exc: requests.RequestException, attempts: int, request: str, patient: str | None
) -> FhirNetworkError:
    temporary = isinstance(exc, DROPPED) and not isinstance(exc, requests.exceptions.SSLError)
    tries = f" after {attempts} attempts" if attempts > 1 else ""
    return FhirNetworkError(
        f"no answer from the FHIR server{tries}: {_failure_kind(exc)}",
        temporary=temporary,
        request=request,
        patient=patient,
    )
