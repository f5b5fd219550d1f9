"""Our credentials, taken back out of anything a FHIR server says.

A server (or the proxy in front of it) may quote the request it refused, Authorization header
included, in its OperationOutcome; that text becomes a FhirError, and from there a 502 body, a
stored run error and a log line. The client learns each secret from the Authorization header it
actually sent (so a static bearer token, a basic password and a SMART access token fetched a
minute ago are all covered, whatever the auth strategy) and every FhirError it raises passes
through `Secrets.scrub_error` first: one place, for every error.
"""

from __future__ import annotations

import base64
import binascii
import threading
from collections.abc import Callable
from typing import Any, Final, TypeVar
from urllib.parse import quote

from service.fhir.errors import FhirError

REDACTED: Final = "***"
# Shorter values would be found inside ordinary words; a credential that short is no secret.
MIN_SECRET_CHARS: Final = 4
# SMART access tokens are renewed every few minutes: remember the recent ones, not all of them.
MAX_REMEMBERED: Final = 32

E = TypeVar("E", bound=FhirError)


class Secrets:
    """The credentials a client has sent, and how to remove them from text; thread-safe."""

    def __init__(self, *known: str) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, None] = {}  # insertion-ordered set: the oldest is dropped first
        for value in known:
            self.add(value)

    def add(self, value: str | None) -> None:
        """Remember a secret (and its percent-encoded form, as a server may quote a URL)."""
        if not value or len(value) < MIN_SECRET_CHARS:
            return
        with self._lock:
            for form in {value, quote(value, safe="")}:
                self._values.pop(form, None)
                self._values[form] = None
            while len(self._values) > MAX_REMEMBERED:
                del self._values[next(iter(self._values))]

    def learn_authorization(self, header: str | bytes | None) -> None:
        """The secrets in an Authorization header: the credential, and for Basic the password
        and the decoded user:password."""
        if not header:
            return
        text = header.decode("latin-1") if isinstance(header, bytes) else header
        scheme, _, credential = text.strip().partition(" ")
        credential = credential.strip()
        self.add(credential or scheme)
        if scheme.lower() == "basic" and credential:
            try:
                decoded = base64.b64decode(credential, validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                return
            self.add(decoded)
            self.add(decoded.partition(":")[2])

    def scrub(self, text: str) -> str:
        """`text` with every remembered secret replaced by ***; the longest first, so that a
        secret containing another is removed whole."""
        with self._lock:
            values = sorted(self._values, key=len, reverse=True)
        for value in values:
            if value in text:
                text = text.replace(value, REDACTED)
        return text

    def scrub_json(self, value: Any) -> Any:
        """A copy of a JSON value with every string scrubbed (an OperationOutcome kept on an
        error may be stored or returned as it is)."""
        return _map_strings(value, self.scrub)

    def scrub_error(self, error: E) -> E:
        """The error with its summary, request, message and OperationOutcome scrubbed."""
        error.redact(self.scrub, self.scrub_json)
        return error

    def __repr__(self) -> str:
        with self._lock:
            return f"Secrets({len(self._values)} remembered)"


def _map_strings(value: Any, fn: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return fn(value)
    if isinstance(value, dict):
        return {fn(str(k)): _map_strings(v, fn) for k, v in value.items()}
    if isinstance(value, list):
        return [_map_strings(item, fn) for item in value]
    return value
