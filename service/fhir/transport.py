"""One FHIR server's HTTP exchanges: origin checks, retries, redirects, answer limits, errors.

Everything a server can get wrong is turned into a FhirError (errors.py) that quotes the server
and names the request and patient; callers never see a `requests` exception or a raw status.

Nothing the server sends is trusted about where to go (fhir-contract.md "Trust nothing the server
sends"): every URL is checked, as `requests` will connect to it, against the configured origin
before it is sent (origin.py), redirects are followed only within that origin, answers are read
under a size cap and a total deadline (limits.py), and every error passes through redact.py so
that a server quoting our Authorization header does not put our credentials in a message.
Log lines name requests without their query values (a run's search may hold names and dates).

The FHIR interactions (paging.py, batching.py, writes.py) and the FhirClient front (client.py)
build on this class; none of them touches the session.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Final, TypeVar
from urllib.parse import unquote, urljoin

import requests
import urllib3.exceptions

from service.config import ConfigError
from service.fhir import errors
from service.fhir.auth import Auth
from service.fhir.deadline import watching
from service.fhir.errors import (
    FhirAnswerTooLarge,
    FhirBadResponse,
    FhirRefusedLink,
    FhirRefusedRedirect,
    FhirTooSlow,
)
from service.fhir.http_parse import Answer, Resource, json_or_none, loggable, parse_resource
from service.fhir.limits import (
    AnswerLimits,
    AnswerTooLarge,
    AnswerTooSlow,
    AnswerUnreadable,
    read_body,
)
from service.fhir.origin import UnsafeUrl, connect_origin, origin_or_none
from service.fhir.redact import Secrets
from service.fhir.retry import (
    RetryPolicy,
    as_requests_exception,
    failure_kind,
    network_error,
)
from service.fhir.session import FHIR_JSON, tls_verify

log = logging.getLogger(__name__)

Timeout = tuple[float, float]

DEFAULT_TIMEOUT: Final[Timeout] = (5.0, 30.0)  # (connect, read) seconds
# Redirects within the configured origin are followed this many hops at most.
MAX_REDIRECTS: Final = 5
REDIRECT_STATUSES: Final = frozenset({301, 302, 303, 307, 308})
E = TypeVar("E", bound=errors.FhirError)


class Transport:
    """The HTTP exchanges with one FHIR server, safe to share between threads.

    `policy` and `timeout` may be replaced while the transport is in use (a test or a run that
    wants fewer retries); `speaker` is the server's software name once the CapabilityStatement
    is known, so that errors quote "HAPI FHIR Server said: ..." instead of "FHIR server said".
    """

    def __init__(
        self,
        base_url: str,
        auth: Auth,
        session: requests.Session,
        policy: RetryPolicy,
        limits: AnswerLimits,
        *,
        timeout: Timeout,
        verify: bool | str | os.PathLike[str],
        sleep: Callable[[float], None],
        clock: Callable[[], float],
    ) -> None:
        self.base_url = base_url.rstrip("/")
        try:
            self.origin = connect_origin(self.base_url)
        except UnsafeUrl as exc:
            raise ConfigError(f"the FHIR base URL is not usable: {exc}") from exc
        self.auth = auth
        self.timeout = timeout
        self.policy = policy
        self.limits = limits
        # every credential sent is remembered here and taken out of every error (redact.py)
        self.secrets = Secrets()
        self.speaker = "FHIR server"
        self._verify = tls_verify(verify, self.base_url)
        self._sleep = sleep
        self._clock = clock
        self._session = session
        self.auth.bind(self.base_url, self._session, timeout=timeout, verify=self._verify)
        self._lock = threading.Lock()
        self._request_count = 0

    def close(self) -> None:
        self._session.close()

    @property
    def request_count(self) -> int:
        with self._lock:
            return self._request_count

    # --- requests as the FHIR modules make them ---------------------------------------------

    def url(self, path_or_url: str) -> str:
        if path_or_url.startswith(("http://", "https://")):
            return path_or_url
        return f"{self.base_url}/{path_or_url}" if path_or_url else self.base_url

    def describe(self, method: str, url: str) -> str:
        """'GET Observation?patient=x&code=...': relative to the base, readable, for messages."""
        relative = url[len(self.base_url) :].lstrip("/") if url.startswith(self.base_url) else url
        return f"{method} {unquote(relative)}"

    def get(self, path_or_url: str, patient: str | None, resource_type: str) -> Resource:
        """GET one resource of the expected type (a Bundle for searches and pages)."""
        url = self.url(path_or_url)
        request = self.describe("GET", url)
        response = self.send("GET", url, request, patient, idempotent=True)
        return self.expect(response, request, patient, resource_type)

    def send_json(
        self,
        method: str,
        path: str,
        body: Resource,
        request: str,
        patient: str | None,
        *,
        idempotent: bool,
        headers: Mapping[str, str] | None = None,
    ) -> Answer:
        """POST or PUT a FHIR JSON body (a batch, a transaction, a create or an update)."""
        return self.send(
            method,
            self.url(path),
            request,
            patient,
            idempotent=idempotent,
            data=json.dumps(body).encode("utf-8"),
            headers={"Content-Type": FHIR_JSON, **(headers or {})},
        )

    def expect(
        self, response: Answer, request: str, patient: str | None, resource_type: str
    ) -> Resource:
        """The resource of the expected type in an answer; FhirBadResponse otherwise."""
        resource = parse_resource(response, request, patient)
        if resource is None:
            summary = "the server answered with an empty body"
            raise self.answer_error(FhirBadResponse, summary, response, request, patient)
        if resource["resourceType"] != resource_type:
            raise self.answer_error(
                FhirBadResponse,
                f"expected a {resource_type}, the server sent a {resource['resourceType']}",
                response,
                request,
                patient,
            )
        return resource

    def send(
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
            self.check_origin(url, request, patient, "send a request")
            with self._lock:
                self._request_count += 1
            try:
                response = self._exchange(method, url, request, patient, **kwargs)
            except requests.RequestException as exc:
                if retry < self.policy.retries and self.policy.retries_exception(exc, idempotent):
                    retry += 1
                    self._pause(request, patient, failure_kind(exc), retry, None)
                    continue
                raise self.scrubbed(network_error(exc, retry + 1, request, patient)) from exc
            status = response.status_code
            location = response.headers.get("Location")
            if status in REDIRECT_STATUSES and location:
                url, method = self._redirect(method, url, status, location, request, patient)
                if method == "GET":
                    kwargs.pop("data", None)
                hops += 1
                if hops > MAX_REDIRECTS:
                    summary = f"more than {MAX_REDIRECTS} redirects"
                    raise self.answer_error(FhirBadResponse, summary, response, request, patient)
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
            raise self.status_error(
                status, response.reason, json_or_none(response), request, patient
            )

    # --- errors: every one leaves through scrubbed() ----------------------------------------

    def scrubbed(self, error: E) -> E:
        """Every FhirError this client raises or returns passes here: our secrets taken out."""
        return self.secrets.scrub_error(error)

    def answer_error(
        self, kind: type[E], summary: str, response: Answer, request: str, patient: str | None
    ) -> E:
        """An error about a server's answer: its status, the request and the patient said, our
        secrets taken out. One place, so no such error leaves without the scrub."""
        return self.scrubbed(
            kind(summary, status=response.status_code, request=request, patient=patient)
        )

    def status_error(
        self, status: int, reason: str, body: Any, request: str, patient: str | None
    ) -> errors.FhirError:
        """The error for an HTTP error status (of an answer or of a batch entry), quoting the
        server by name and its OperationOutcome, temporary when the policy would retry it."""
        return self.scrubbed(
            errors.status_error(
                status,
                reason,
                body=body,
                request=request,
                patient=patient,
                speaker=self.speaker,
                temporary_statuses=self.policy.statuses,
            )
        )

    def check_origin(self, url: str, request: str, patient: str | None, doing: str) -> None:
        """FhirRefusedLink unless `url` connects to the configured origin (origin.py)."""
        try:
            where = connect_origin(url)
        except UnsafeUrl as exc:
            raise self.scrubbed(
                FhirRefusedLink(
                    f"refused to {doing}: {exc}; the configured server is {self.origin}",
                    request=request,
                    patient=patient,
                )
            ) from None
        if where != self.origin:
            raise self.scrubbed(
                FhirRefusedLink(
                    f"refused to {doing} to {where}: the configured server is {self.origin}",
                    request=request,
                    patient=patient,
                )
            )

    # --- internals --------------------------------------------------------------------------

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
            status = response.status_code
            try:
                self.secrets.learn_authorization(response.request.headers.get("Authorization"))
                if status in REDIRECT_STATUSES and response.headers.get("Location"):
                    content = b""  # not read: the redirect is judged by its Location alone
                else:
                    content = read_body(response.raw, response.headers, self.limits, deadline_at)
                if watch.fired:  # the body may have ended only because the deadline cut it
                    raise AnswerTooSlow()
            except AnswerTooSlow:
                raise self._too_slow(status, request, patient) from None
            except AnswerTooLarge as exc:
                raise self.scrubbed(
                    FhirAnswerTooLarge(str(exc), status=status, request=request, patient=patient)
                ) from None
            except AnswerUnreadable as exc:
                raise self.scrubbed(
                    FhirBadResponse(str(exc), status=status, request=request, patient=patient)
                ) from None
            except urllib3.exceptions.HTTPError as exc:
                if watch.fired:
                    raise self._too_slow(status, request, patient) from None
                raise as_requests_exception(exc) from exc
            finally:
                response.close()
        return Answer(
            status, response.reason or "", response.headers, content, self.limits.max_depth
        )

    def _too_slow(self, status: int | None, request: str, patient: str | None) -> FhirTooSlow:
        return self.scrubbed(
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
            summary = (
                f"refused to follow a redirect ({status}) to "
                f"{where or 'a URL with userinfo or an ambiguous host'}: redirects are "
                f"followed only within the configured server {self.origin}"
            )
        elif status in (307, 308) or method in ("GET", "HEAD"):
            return target, method
        else:
            summary = f"refused to follow a redirect ({status}) that would turn {method} into GET"
        raise self.scrubbed(
            FhirRefusedRedirect(summary, status=status, request=request, patient=patient)
        )
