"""The store's own errors, apart from the code that raises them so callers (the API's error
table, the runtime) can import them without the persistence machinery.

Database errors stay SQLAlchemy's: only what the store decides itself is a `StoreError`.
"""

from __future__ import annotations

__all__ = [
    "ClaimLost",
    "InvalidAsOf",
    "InvalidResult",
    "NotFound",
    "RunStateError",
    "StoreError",
]


class StoreError(Exception):
    """Base of the store's own errors (database errors stay SQLAlchemy's)."""


class NotFound(StoreError, LookupError):
    """A run, a patient of a run or an outbox entry that does not exist."""


class RunStateError(StoreError):
    """An operation the run's status does not allow (adding patients to a finished run)."""


class InvalidResult(StoreError, ValueError):
    """A result dict that is not a §7 result for the patient it is recorded for."""


class InvalidAsOf(StoreError, ValueError):
    """An as_of after the service's date: a screen of a day that has not come yet."""


class ClaimLost(StoreError):
    """This process no longer holds the patient's claim (its lease ran out and another
    process took the patient): the outcome is not recorded, the other process records its own."""
