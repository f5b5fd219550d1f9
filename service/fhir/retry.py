"""What is retried, how long to wait, and how a failure that never got an answer is named.

Retries are a loop of our own around the session (transport.py) rather than a urllib3 `Retry`
on the adapter: the loop can count requests, sleep through an injected function (tests do not
wait), re-authorise once after a 401, and name the request in its log lines. What is retried is
data (RetryPolicy), kept here apart from the loop so that a run or a test can swap it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import requests
import urllib3.exceptions

from service.fhir.errors import FhirNetworkError
from service.fhir.http_parse import parse_retry_after

# Failures where the answer never arrived whole: a timeout, a refused or dropped connection, or
# a connection reset in the middle of the body (requests calls that ChunkedEncodingError, even
# for a body framed by Content-Length).
DROPPED: Final = (
    requests.Timeout,
    requests.ConnectionError,
    requests.exceptions.ChunkedEncodingError,
)
# 408 and 429 say the server did not process the request; 5xx above may have been processed.
TEMPORARY_STATUSES: Final = frozenset({408, 429, 500, 502, 503, 504})
UNPROCESSED_STATUSES: Final = frozenset({408, 429})


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


def failure_kind(exc: requests.RequestException) -> str:
    """What went wrong, in words a user acts on (the log line and the error say it)."""
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


def network_error(
    exc: requests.RequestException, attempts: int, request: str, patient: str | None
) -> FhirNetworkError:
    """The FhirNetworkError for a request that got no answer; `temporary` unless TLS failed."""
    temporary = isinstance(exc, DROPPED) and not isinstance(exc, requests.exceptions.SSLError)
    tries = f" after {attempts} attempts" if attempts > 1 else ""
    return FhirNetworkError(
        f"no answer from the FHIR server{tries}: {failure_kind(exc)}",
        temporary=temporary,
        request=request,
        patient=patient,
    )


def as_requests_exception(exc: urllib3.exceptions.HTTPError) -> requests.RequestException:
    """The requests exception that requests itself raises for a urllib3 failure while a body is
    read, so that the retry policy and the messages treat a streamed body as before."""
    if isinstance(exc, urllib3.exceptions.ReadTimeoutError):
        return requests.exceptions.ReadTimeout(str(exc))
    if isinstance(exc, urllib3.exceptions.SSLError):
        return requests.exceptions.SSLError(str(exc))
    if isinstance(exc, urllib3.exceptions.ProtocolError | urllib3.exceptions.DecodeError):
        return requests.exceptions.ChunkedEncodingError(str(exc))
    return requests.ConnectionError(str(exc))
