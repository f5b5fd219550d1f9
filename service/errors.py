"""The service's domain errors: what a screen or a run can fail with, whatever asked for it.

Why one module: the HTTP layer maps each of these to a status in one table, the CLI to an exit
code, and the background work decides from them whether a patient fails, waits or is left for
another process. They carry ids and server words only, never patient data, so their text may be
stored and shown (`safe_error`). The store's own errors (InvalidAsOf, ClaimLost, ...) stay in
service.store, next to the SQL that raises them.
"""

from __future__ import annotations

from service.fhir.errors import FhirError
from service.fhir.source import SourceError

# Said by a screen and a run asked to write back when there is no FHIR server to write to.
WRITE_BACK_NEEDS_SERVER = "write-back needs a FHIR server (MEDCARE_FHIR_BASE_URL)"


class SourceUnavailable(Exception):
    """The patient source could not give a patient (the message names the request)."""


class NotFound(Exception):
    """The patient is not known to the source."""


class Stopping(Exception):
    """The service is shutting down: leave the patient claimed, a restart resumes it."""


class DatabaseUnavailable(Exception):
    """The database went away in the middle of a batch; `patients` were screened but not
    recorded and are still claimed by this process."""

    def __init__(self, patients: list[str]) -> None:
        super().__init__(f"{len(patients)} patients not recorded")
        self.patients = patients


def safe_error(exc: BaseException) -> str:
    """An error text for the store and API: our exceptions carry ids and server words only;
    any other exception (a bug, a library's message that may quote data) is named, not quoted."""
    text = (
        str(exc) if isinstance(exc, FhirError | NotFound | SourceUnavailable | SourceError) else ""
    )
    return (text or type(exc).__name__)[:500]
