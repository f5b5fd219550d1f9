"""What the trial team's reports read (issue 15 item 5): the current population's results and
each patient's current disposition.

Why a concern of its own: the run reports (service.store.reports) read one run; these read
the CURRENT population (`latest_results`, never a look back) with what people decided about
it (`review_entries`), and only read. Ids and codes come out of here; what a report may show
of them (a sponsor sees no id and no day) is service/reports' concern.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import func, select

from service.store.base import StoreBase
from service.store.models import LatestResult, ReviewEntry, ReviewKind, StoredResult


@dataclass(frozen=True)
class CurrentDisposition:
    """A patient's newest disposition: its code, reason (free text) and when it was made."""

    code: str
    reason: str | None
    recorded_at: datetime


@dataclass(frozen=True)
class PopulationRow:
    """One patient's current result with its current disposition (None: none recorded)."""

    patient: str
    as_of: date
    body: dict[str, Any]
    disposition: CurrentDisposition | None


class PopulationReportStore(StoreBase):
    """The population reads over the shared sessions (see the module docstring)."""

    def current_population(self, study: str) -> list[PopulationRow]:
        """Every patient's current result for `study`, by patient id, with its disposition.

        One read transaction, so a disposition recorded meanwhile is in or out for every
        row; the dispositions are read first (one row per patient), the bodies in batches.
        """
        newest = (
            select(ReviewEntry.patient_id, func.max(ReviewEntry.version).label("version"))
            .where(ReviewEntry.study == study, ReviewEntry.kind == ReviewKind.DISPOSITION.value)
            .group_by(ReviewEntry.patient_id)
            .subquery()
        )
        dispositions = (
            select(ReviewEntry)
            .join(
                newest,
                (ReviewEntry.patient_id == newest.c.patient_id)
                & (ReviewEntry.version == newest.c.version),
            )
            .where(ReviewEntry.study == study)
        )
        results = (
            select(LatestResult.patient_id, StoredResult.as_of, StoredResult.body)
            .join(StoredResult, StoredResult.id == LatestResult.result_id)
            .where(LatestResult.study == study)
            .order_by(LatestResult.patient_id)
            .execution_options(yield_per=500)
        )
        with self._read() as session:
            decided = {
                row.patient_id: CurrentDisposition(row.code, row.reason, row.recorded_at)
                for row in session.scalars(dispositions)
            }
            return [
                PopulationRow(patient, as_of, body, decided.get(patient))
                for patient, as_of, body in session.execute(results)
            ]
