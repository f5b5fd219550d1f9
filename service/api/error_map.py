"""Domain errors to HTTP: one table, registered once as Flask error handlers.

Why a table: the views used to catch the runtime's and the store's errors in a try/except of
their own, so one error could answer differently from two endpoints and a new endpoint had to
know them all. Now a view calls a use case and lets its error go; the status, the code and the
message are read here. The message is the error's own text (the domain writes it to be safe to
show: ids, never data) unless the table gives a fixed one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import Flask, Response

from service.api.errors import error_response
from service.api.security import Unauthorized
from service.cohorts import CohortExists, CohortNotFound, InvalidCohort
from service.dispositions import InvalidEntry, StaleVersion, UnknownCriterion, VersionRequired
from service.errors import NotFound, SourceUnavailable
from service.fhir.cohort_search import SearchNotAllowed
from service.store import BadCursor, InvalidAsOf
from service.usecases import NoResult, RunFinished, RunNotFound, UnsupportedPopulation


@dataclass(frozen=True)
class HttpError:
    """How one domain error answers: status, code, and a fixed message (None: the error's
    own text) and details (from the error)."""

    status: int
    code: str
    message: str | None = None
    details: Callable[[Any], dict[str, Any]] | None = None


ERRORS: dict[type[Exception], HttpError] = {
    # no credentials, or refused ones: the reason, never the credential
    Unauthorized: HttpError(401, "unauthorized"),
    # after today, or a look back with write_back (a look back screen is never written back)
    InvalidAsOf: HttpError(400, "invalid-as-of"),
    BadCursor: HttpError(400, "bad-cursor", "the cursor is not one this API gave out"),
    SearchNotAllowed: HttpError(
        400, "search-not-allowed", details=lambda exc: {"parameter": exc.parameter}
    ),
    UnsupportedPopulation: HttpError(400, "unsupported-population"),
    NotFound: HttpError(404, "patient-not-found"),
    RunNotFound: HttpError(404, "run-not-found"),
    NoResult: HttpError(404, "no-result"),
    RunFinished: HttpError(409, "run-finished"),
    InvalidCohort: HttpError(400, "invalid-cohort"),
    CohortNotFound: HttpError(404, "cohort-not-found"),
    CohortExists: HttpError(409, "cohort-exists"),
    SourceUnavailable: HttpError(502, "fhir-server-error"),  # its words are quoted
    # a patient's review (service/dispositions.py): the field, or the version and its author
    InvalidEntry: HttpError(400, "invalid-entry", details=lambda exc: {"field": exc.field}),
    UnknownCriterion: HttpError(404, "unknown-criterion"),
    StaleVersion: HttpError(412, "stale-version", details=lambda exc: exc.details()),
    VersionRequired: HttpError(428, "if-match-required"),
}


def register_domain_errors(app: Flask) -> None:
    for kind, answer in ERRORS.items():
        app.register_error_handler(kind, _handler(answer))


def _handler(answer: HttpError) -> Callable[[Exception], Response]:
    def handle(error: Exception) -> Response:
        details = answer.details(error) if answer.details is not None else None
        return error_response(answer.status, answer.code, answer.message or str(error), details)

    return handle
