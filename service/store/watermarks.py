"""Sweep watermarks: how far the incremental sweep of each resource type got (issue 14 item 2).

Why stored, and on the FHIR server's clock: a sweep asks the server for what changed since the
last one (`_lastUpdated=gt...`). Kept in memory, a restart would either sweep everything again
(a storm of re-screens) or miss what changed while the service was down; kept in the store it
survives restarts and is shared by every worker, whichever of them runs the next sweep. The
time is the newest `meta.lastUpdated` the server reported, never the service's clock, so a
clock difference between the two cannot skip changes (the sweep still asks a little before it,
the skew allowance, for writes that became visible late).

`swept_at` (the service's clock) is when the type last swept without error: readiness reports
a sweep that has not run for too long. A failed sweep keeps the watermark and stores its
cause in `last_error` (ids and causes only).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from service.store.base import StoreBase, aware, short
from service.store.models import Watermark


@dataclass(frozen=True)
class WatermarkInfo:
    """One resource type's sweep state as stored."""

    resource_type: str
    last_updated: datetime | None
    swept_at: datetime | None
    last_error: str | None

    def to_dict(self) -> dict[str, str | None]:
        return {
            "resource_type": self.resource_type,
            "last_updated": self.last_updated.isoformat() if self.last_updated else None,
            "swept_at": self.swept_at.isoformat() if self.swept_at else None,
            "last_error": self.last_error,
        }


def _info(row: Watermark) -> WatermarkInfo:
    return WatermarkInfo(row.resource_type, row.last_updated, row.swept_at, row.last_error)


class WatermarkStore(StoreBase):
    """Watermarks over the shared sessions (see the module docstring)."""

    def watermark(self, resource_type: str) -> WatermarkInfo | None:
        with self._read() as session:
            row = session.get(Watermark, resource_type)
            return _info(row) if row is not None else None

    def watermarks(self) -> list[WatermarkInfo]:
        """Every swept type, by name."""
        with self._read() as session:
            rows = session.scalars(select(Watermark).order_by(Watermark.resource_type))
            return [_info(row) for row in rows]

    def advance_watermark(self, resource_type: str, last_updated: datetime) -> WatermarkInfo:
        """A sweep of `resource_type` succeeded up to `last_updated` (server clock): the mark
        moves there, never back (a sweep that saw only older changes leaves it), `swept_at`
        becomes now and the last error is cleared."""
        aware(last_updated, "last_updated")
        return self._put(resource_type, last_updated=last_updated, error=None)

    def watermark_failed(self, resource_type: str, error: str) -> WatermarkInfo:
        """A sweep of `resource_type` failed: the mark and `swept_at` stay, the cause is kept."""
        return self._put(resource_type, last_updated=None, error=short(error))

    def _put(
        self, resource_type: str, *, last_updated: datetime | None, error: str | None
    ) -> WatermarkInfo:
        now = self._now()
        with self._write() as session:
            session.execute(
                self._insert(Watermark)
                .values(resource_type=resource_type)
                .on_conflict_do_nothing(index_elements=[Watermark.resource_type])
            )
            row = session.get(Watermark, resource_type, with_for_update=True)
            assert row is not None
            row.last_error = error
            if error is None:
                row.swept_at = now
                if last_updated is not None and (
                    row.last_updated is None or last_updated > row.last_updated
                ):
                    row.last_updated = last_updated
            session.flush()
            return _info(row)
