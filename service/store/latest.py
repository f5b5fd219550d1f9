"""The patient's current result (`latest_results`) and the change counter: the two rows that
order a patient's writers and the changes feed.

Why apart: recording a result and queueing a write-back both take the patient's
`latest_results` row lock first (the lock order of service.store.results), so both import it
from here rather than from each other. Functions over a session; the caller owns the
transaction.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from service.store.errors import StoreError
from service.store.models import ChangeCounter, LatestResult, StoredResult


def _of(patient_id: str, study: str) -> tuple[Any, Any]:
    return LatestResult.patient_id == patient_id, LatestResult.study == study


def lock_latest(session: Session, patient_id: str, study: str) -> str | None:
    """Lock the patient's latest_results row; its fingerprint, or None if there is none."""
    pointer = _lock_pointer(session, patient_id, study)
    return None if pointer is None else str(pointer.fingerprint)


def current_as_of(session: Session, patient_id: str, study: str) -> date | None:
    """The as_of of the patient's current result, its latest_results row locked (the first
    lock of the recording transaction, as in `replace_latest`)."""
    result_id = session.scalar(
        select(LatestResult.result_id).where(*_of(patient_id, study)).with_for_update()
    )
    if result_id is None:
        return None
    return session.scalar(select(StoredResult.as_of).where(StoredResult.id == result_id))


def _lock_pointer(session: Session, patient_id: str, study: str) -> Any:
    """Lock the patient's latest_results row; its (result_id, fingerprint), or None."""
    return session.execute(
        select(LatestResult.result_id, LatestResult.fingerprint)
        .where(*_of(patient_id, study))
        .with_for_update()
    ).first()


def replace_latest(
    session: Session,
    insert_latest: Any,
    now: datetime,
    patient_id: str,
    study: str,
    result_id: int,
    fingerprint: str,
) -> tuple[bool, int | None]:
    """Point latest_results at `result_id`; whether the decision (fingerprint) differs from
    before, and the id of the result it replaced (None for the patient's first one: the feed
    entry's previous status and changed criteria are read from it).

    An unchanged decision moves the pointer too: the current result is the newest screen, so
    its `as_of` says how current it is; the feed and the write-back only see changes.
    `insert_latest` is the dialect's INSERT of LatestResult (ON CONFLICT DO NOTHING on both
    databases: StoreBase._insert).
    """
    previous = _lock_pointer(session, patient_id, study)
    pointer = {"result_id": result_id, "fingerprint": fingerprint, "updated_at": now}
    if previous is None:
        # First result of this patient. Two workers may race here: ON CONFLICT DO NOTHING
        # waits for the other's insert to commit and then inserts nothing; lock that row.
        inserted = session.execute(
            insert_latest.values(patient_id=patient_id, study=study, **pointer)
            .on_conflict_do_nothing(index_elements=["patient_id", "study"])
            .returning(LatestResult.patient_id)
        ).first()
        if inserted is not None:
            return True, None
        previous = _lock_pointer(session, patient_id, study)
    set_latest(session, patient_id, study, **pointer)
    return previous.fingerprint != fingerprint, previous.result_id


def set_latest(session: Session, patient_id: str, study: str, **values: Any) -> None:
    """Update the patient's latest_results row (locked already by this transaction)."""
    session.execute(
        update(LatestResult)
        .where(*_of(patient_id, study))
        .values(**values)
        .execution_options(synchronize_session=False)
    )


def next_change_seq(session: Session) -> int:
    """Draw the next change number: the transaction's last step before COMMIT (the counter
    row's lock hands numbers out in commit order; see Store.record_patient_result)."""
    seq = session.execute(
        update(ChangeCounter)
        .where(ChangeCounter.id == 1)
        .values(value=ChangeCounter.value + 1)
        .returning(ChangeCounter.value)
        .execution_options(synchronize_session=False)
    ).scalar_one_or_none()
    if seq is None:
        raise StoreError("change_counter has no row: run Store.migrate()")
    return seq
