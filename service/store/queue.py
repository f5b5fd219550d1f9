"""One work-queue mechanism for the store's two queues: a run's patients and the write-back
outbox.

Why one: both hand rows to workers that may die. Taking a row counts an attempt and puts a
lease end on it; a taker that lives on settles the row (or renews its lease), one that dies
loses the row when the lease ends. Written twice, the two queues had two lease lengths in two
places and two spellings of the same locked batch; here they share `WorkQueue.take` and
`WorkQueue.settle`, and the lease lengths are tuned in one place (`DEFAULT_CLAIM_LEASE`,
`DEFAULT_OUTBOX_LEASE`, overridable per Store).

The queues differ only in their columns:

* run patients (`run_patients`): waiting is `pending`, taken is `claimed`, the lease end is
  `lease_expires_at`, and the taker is named in `claimed_by` (so it can renew and release
  its own claims; service.store.leases tells a dead owner from a live one);
* the outbox (`writeback_outbox`): an entry stays `pending` while taken; its lease end is its
  next due time (`next_attempt_at`), so a writer that dies leaves an entry that is simply due
  again when the lease ends. No owner column, and none needed: a writer settles an entry by
  its id, and an entry no longer pending is not settled twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import CTE, ColumnElement, Row, Select, select, update
from sqlalchemy.orm import InstrumentedAttribute, Session

# A run's claim lives this long without a heartbeat; the owner renews it about every third
# of it (service.runtime), so only an owner that stopped (killed, hung) loses its patients.
DEFAULT_CLAIM_LEASE = timedelta(seconds=60)
# A taken write-back stays with its writer this long: no heartbeat renews it, so it covers a
# whole batch of writes with the FHIR client's retries (service.runtime drains 50 at a time).
DEFAULT_OUTBOX_LEASE = timedelta(minutes=5)


def locked_batch(query: Select[Any]) -> CTE:
    """`query` as a materialised CTE that locks its rows, skipping rows others have locked.

    A queue's "take N" must select its batch once. Written as `WHERE id IN (SELECT ... LIMIT
    n FOR UPDATE SKIP LOCKED)`, PostgreSQL may run the subquery again for every row it
    updates, and each run skips the rows the statement has just locked itself, so the
    statement takes more than n rows. A MATERIALIZED CTE runs once. SQLite (which ignores
    FOR UPDATE) evaluates it the same way.
    """
    return query.with_for_update(skip_locked=True).cte("batch").prefix_with("MATERIALIZED")


@dataclass(frozen=True)
class WorkQueue:
    """A table read as a queue: which rows wait, where a lease end goes, who took a row.

    `key` identifies a row within the rows a caller narrows to (`where`); `waiting` is the
    condition of a row that may be taken; `owner` (when the table names takers) is the column
    that names the taker, and `taken` the condition of a row someone holds.
    """

    table: type[Any]
    key: InstrumentedAttribute[Any]
    waiting: ColumnElement[bool]
    lease_end: InstrumentedAttribute[Any]
    owner: InstrumentedAttribute[Any] | None = None
    taken: ColumnElement[bool] | None = None

    def take(
        self,
        session: Session,
        *,
        now: datetime,
        lease: timedelta,
        limit: int,
        where: Iterable[ColumnElement[bool]],
        order_by: Sequence[Any],
        also: Iterable[ColumnElement[bool]] = (),
        owner: str | None = None,
        values: Mapping[str, Any] | None = None,
        returning: Sequence[Any] = (),
    ) -> Sequence[Row[*tuple[Any, ...]]]:
        """Take up to `limit` waiting rows (`where`, in `order_by`) in ONE UPDATE statement.

        On PostgreSQL the batch takes its rows `FOR UPDATE SKIP LOCKED` (see `locked_batch`),
        so concurrent takers get disjoint rows without waiting for each other; on SQLite the
        write transaction (BEGIN IMMEDIATE) serialises them. Each row taken counts an attempt,
        gets its lease end (`now + lease`) and, with an owner column, the taker (`owner`);
        `values` are set too. `where` picks the batch; `also` must hold again at the update
        (the run a patient belongs to, still running).
        Returns the `returning` columns of the rows taken.
        """
        batch = locked_batch(
            select(self.key).where(*where, self.waiting).order_by(*order_by).limit(limit)
        )
        claim: dict[str, Any] = {
            "attempts": self.table.attempts + 1,
            self.lease_end.key: now + lease,
            "updated_at": now,
        }
        if self.owner is not None:
            claim[self.owner.key] = owner
        statement = (
            update(self.table)
            .where(self.key == batch.c[self.key.key], self.waiting, *also)
            .values(**claim, **(values or {}))
            .returning(*returning)
            .execution_options(synchronize_session=False)
        )
        return session.execute(statement).all()

    def held_by(self, owner: str) -> list[ColumnElement[bool]]:
        """The conditions of a row `owner` holds now."""
        if self.owner is None or self.taken is None:
            raise TypeError(f"{self.table.__tablename__} names no takers")
        return [self.taken, self.owner == owner]

    def expired(self, now: datetime) -> list[ColumnElement[bool]]:
        """Lease ends that are gone by `now` (a row taken before leases existed has none)."""
        return [self.lease_end.is_(None), self.lease_end <= now]

    def settle(self, session: Session, *where: ColumnElement[bool], **values: Any) -> Sequence[Any]:
        """ONE `UPDATE ... WHERE where RETURNING key`: the keys of the rows it changed.

        Every way a row leaves the taken state (done, failed, released, requeued, given up)
        and the heartbeat go through it, so they are the same statement shape everywhere.
        """
        return session.scalars(
            update(self.table)
            .where(*where)
            .values(**values)
            .returning(self.key)
            .execution_options(synchronize_session=False)
        ).all()
