"""Errors from a FHIR server, carrying the server's own words and what we were doing.

A user who sees "FHIR server said: Resource Patient/x is not known (GET Patient/x for Patient/x,
HTTP 404)" can act on it without reading a log; a bare "404 Client Error" would send them to
one. The tree is shallow on purpose: callers branch on "try again later" (FhirNetworkError with
`temporary`), "fix the credentials" (FhirAuthError), "it is not there" (FhirNotFound) and
"someone else changed it" (FhirConflict); everything else is a FhirError to report.

Messages carry ids, request lines and the server's diagnostics only: never tokens, passwords or
response bodies, so they are safe to log and to show.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# A user reads the diagnostics, not a Java stack trace: keep the quote short.
MAX_OUTCOME_CHARS = 500
MAX_REQUEST_CHARS = 300


class FhirError(Exception):
    """A FHIR request that failed; `str()` quotes the server and names the request and patient."""

    def __init__(
        self,
        summary: str,
        *,
        status: int | None = None,
        operation_outcome: dict[str, Any] | None = None,
        request: str | None = None,
        patient: str | None = None,
    ) -> None:
        self.summary = summary
        self.status = status
        self.operation_outcome = operation_outcome
        self.request = request
        self.patient = patient
        self.message = _compose(summary, request, patient, status)
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message

    def redact(self, text: Callable[[str], str], body: Callable[[Any], Any]) -> None:
        """Rewrite what this error quotes (summary, request, OperationOutcome) through `text`
        and `body`: redact.Secrets takes our credentials out of a server's words with it."""
        self.summary = text(self.summary)
        self.request = text(self.request) if self.request else self.request
        if self.operation_outcome is not None:
            self.operation_outcome = body(self.operation_outcome)
        self.message = text(_compose(self.summary, self.request, self.patient, self.status))
        self.args = (self.message,)


class FhirNetworkError(FhirError):
    """No usable answer: connection failure, timeout, or a server error status.

    `temporary` is True when trying again later may well succeed (timeouts, 429, 503, ...), so a
    population run can tell "the server is busy" from "the server cannot do this".
    """

    def __init__(self, summary: str, *, temporary: bool, **context: Any) -> None:
        self.temporary = temporary
        super().__init__(summary, **context)


class FhirAuthError(FhirError):
    """401 or 403, or no token could be obtained: the credentials or scopes need fixing."""


class FhirNotFound(FhirError):
    """404 or 410: the resource (or the resource type) is not on this server."""


class FhirConflict(FhirError):
    """409 or 412: a concurrent change or a failed precondition (If-Match, If-None-Exist)."""


class FhirBadResponse(FhirError):
    """The server answered, but not with FHIR JSON we can use (malformed JSON, no resourceType)."""


class FhirRefusedLink(FhirError):
    """A paging link to another origin: following it would hand our credentials to that host."""


class FhirRefusedRedirect(FhirRefusedLink):
    """A redirect to another origin (or one that would change the method): not followed, so
    neither our credentials nor the request body (a batch, a write-back) leave the server."""


class FhirAnswerTooLarge(FhirBadResponse):
    """An answer larger (after decompression) than the configured cap: reading stopped there."""


class FhirTooSlow(FhirNetworkError):
    """An answer that did not arrive whole within the request's total deadline.

    Not `temporary`: a run does not try the patient again later, so a server that drips bytes
    costs one deadline per patient, not one per attempt (a busy server answers slowly, but
    within minutes; read timeouts remain temporary)."""

    def __init__(self, summary: str, **context: Any) -> None:
        super().__init__(summary, temporary=False, **context)


def operation_outcome_text(body: Any) -> str | None:
    """The human text of an OperationOutcome: each issue's diagnostics, else its details.text.

    Error and fatal issues are preferred (a HAPI outcome may add an informational "completed in
    15ms" issue that says nothing about the failure); the joined text is trimmed, and None is
    returned for anything that is not an OperationOutcome with text.
    """
    if not isinstance(body, dict) or body.get("resourceType") != "OperationOutcome":
        return None
    issues = [issue for issue in body.get("issue") or [] if isinstance(issue, dict)]
    serious = [issue for issue in issues if issue.get("severity") in ("error", "fatal")]
    texts = [text for issue in serious or issues if (text := _issue_text(issue))]
    if not texts:
        return None
    return _trim(" ".join(texts) if len(texts) == 1 else "; ".join(texts), MAX_OUTCOME_CHARS)


def status_error(
    status: int,
    reason: str,
    *,
    body: Any,
    request: str,
    patient: str | None,
    speaker: str = "FHIR server",
    temporary_statuses: frozenset[int] = frozenset(),
) -> FhirError:
    """The FhirError subclass for an HTTP error status, quoting the OperationOutcome if any."""
    outcome = body if isinstance(body, dict) and operation_outcome_text(body) else None
    text = operation_outcome_text(outcome)
    summary = f"{speaker} said: {text}" if text else f"{speaker} answered {status} {reason}".strip()
    context: dict[str, Any] = {
        "status": status,
        "operation_outcome": outcome,
        "request": request,
        "patient": patient,
    }
    if status in (401, 403):
        return FhirAuthError(summary, **context)
    if status in (404, 410):
        return FhirNotFound(summary, **context)
    if status in (409, 412):
        return FhirConflict(summary, **context)
    if status in temporary_statuses:
        return FhirNetworkError(summary, temporary=True, **context)
    if status >= 500:
        return FhirNetworkError(summary, temporary=False, **context)
    return FhirError(summary, **context)


def _issue_text(issue: dict[str, Any]) -> str | None:
    diagnostics = issue.get("diagnostics")
    if isinstance(diagnostics, str) and diagnostics.strip():
        return diagnostics.strip()
    details = issue.get("details")
    text = details.get("text") if isinstance(details, dict) else None
    return text.strip() if isinstance(text, str) and text.strip() else None


def _compose(summary: str, request: str | None, patient: str | None, status: int | None) -> str:
    """'<summary> (GET Patient/x for Patient/x, HTTP 404)': what the server said, then what we did."""
    doing = [_trim(request, MAX_REQUEST_CHARS)] if request else []
    if patient:  # an id or a reference ("Patient/x"): named once either way
        doing.append(f"for Patient/{patient.removeprefix('Patient/')}")
    context = [" ".join(doing)] if doing else []
    if status is not None:
        context.append(f"HTTP {status}")
    return f"{summary} ({', '.join(context)})" if context else summary


def _trim(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"
