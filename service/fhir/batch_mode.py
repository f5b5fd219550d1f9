"""How a client reads a patient: one `batch`, or concurrent searches; and why.

MEDCARE_FHIR_BATCH=always/never decide by setting. `auto` (the default) follows the contract:
the first batch is a probe. Stock HAPI accepts batch without declaring it in its
CapabilityStatement, so asking the statement alone cost a newcomer's sandbox 7 requests per
patient instead of 1; a server that refuses the probe gets concurrent searches from then on.
Either way the decision and its reason are kept, so a run can say which mode it used.
"""

from __future__ import annotations

import threading
from typing import Final

BATCH: Final = "batch"
CONCURRENT: Final = "concurrent searches"
UNDECIDED: Final = "not decided yet"


class BatchMode:
    """The setting and, for `auto`, what the probe found; thread-safe, decided once."""

    def __init__(self, setting: str) -> None:
        self.setting = setting
        self._lock = threading.Lock()
        if setting == "always":
            self._mode, self._reason = BATCH, "MEDCARE_FHIR_BATCH=always"
        elif setting == "never":
            self._mode, self._reason = CONCURRENT, "MEDCARE_FHIR_BATCH=never"
        else:
            self._mode, self._reason = UNDECIDED, "auto: no patient has been read yet"

    @property
    def mode(self) -> str:
        with self._lock:
            return self._mode

    @property
    def reason(self) -> str:
        with self._lock:
            return self._reason

    @property
    def probing(self) -> bool:
        """True while `auto` has not decided: the next batch is the probe."""
        with self._lock:
            return self._mode == UNDECIDED

    def use_batch(self) -> bool:
        """Whether to send a batch now (while undecided: yes, as the probe)."""
        with self._lock:
            return self._mode != CONCURRENT

    def kept(self, declared: bool | None) -> None:
        """The probe was answered properly: batch from now on. `declared`: what the
        CapabilityStatement says, when it was read (None: not read)."""
        reason = "auto: the server answered the first batch properly"
        if declared is not None:
            statement = "declares" if declared else "does not declare"
            reason += f" (its CapabilityStatement {statement} batch)"
        self._decide(BATCH, reason)

    def refused(self, why: str) -> None:
        """The probe was refused: concurrent searches from now on."""
        self._decide(CONCURRENT, f"auto: the server refused the first batch ({why})")

    def _decide(self, mode: str, reason: str) -> None:
        with self._lock:
            if self._mode == UNDECIDED:  # concurrent probes: the first answer decides
                self._mode, self._reason = mode, reason
