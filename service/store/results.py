"""Results and the changes feed: record a screen (with its run patient's outcome and its
write-back, in one transaction), the patient's current result, and the feed of changes.

Results are kept forever (one row per screen, with the trigger and source that made it);
`latest_results` points at the newest one per patient and study. A result whose decision
(fingerprint) differs from the previous latest one gets a change sequence number, the previous
status and the criteria that changed, and the changes feed lists results by that number. A
screen with the same decision (a phone-number edit, a nightly re-screen of unchanged data) is
kept and becomes the current result (its as_of says how current it is) but makes no feed entry
and no write-back. Only a current result does either: a look back (as_of before the service's
date, `today()`) is kept with its run and nothing else (fhir-contract.md "What the current
result is").
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import date
from typing import Any

from sqlalchemy import insert, select, update

from service.store import cursors
from service.store.base import check_limit
from service.store.claims import ClaimStore
from service.store.errors import InvalidResult, NotFound
from service.store.latest import current_as_of, next_change_seq, replace_latest, set_latest
from service.store.models import (
    FINGERPRINT_LENGTH,
    ChangeCounter,
    LatestResult,
    PatientState,
    ResultStatus,
    ReviewEntry,
    ReviewKind,
    Run,
    StoredResult,
    Trigger,
)
from service.store.outbox import OutboxStore
from service.store.types import ChangeItem, Recorded

# Why a screen ran, as the feed says it: the re-screen triggers of issue 14 (models.Trigger:
# subscription, sweep, schedule, request) and a run's patient ("run").
RUN_TRIGGER = "run"
TRIGGERS = frozenset({t.value for t in Trigger} | {RUN_TRIGGER})


def validated(patient_id: str, body: Mapping[str, Any]) -> tuple[str, date, str]:
    """The study, as_of and status of a §7 result for `patient_id`; InvalidResult (naming
    the patient id only, never quoting the result) when it is not one."""
    if body.get("patient") != patient_id:
        raise InvalidResult(f"the result is not for patient {patient_id}")
    study = body.get("study")
    if not isinstance(study, str) or not study:
        raise InvalidResult(f"the result of patient {patient_id} names no study")
    try:
        as_of = date.fromisoformat(str(body.get("as_of")))
    except ValueError as error:
        raise InvalidResult(f"the result of patient {patient_id} has no as_of date") from error
    status = body.get("status")
    if status not in {s.value for s in ResultStatus}:
        raise InvalidResult(f"the result of patient {patient_id} has no known status")
    return study, as_of, str(status)


# A quoted reference's version, dropped from reasons as the fingerprint drops it
# (service.writeback.fingerprint.VERSION): a new version of the same resource is no change.
_VERSION = re.compile(r"/_history/[A-Za-z0-9.\-]{1,64}")


def _decided(body: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Each criterion's (result, reason), read as the fingerprint reads them: the screening
    day and quoted versions left out (a reason that only quotes a later day or a new version
    of the same resource is the same reason)."""
    day = str(body.get("as_of"))
    criteria: Sequence[Mapping[str, Any]] = body.get("criteria") or ()
    return {
        c["id"]: (
            c.get("result"),
            _VERSION.sub("", str(c.get("reason", ""))).replace(day, "{as_of}"),
        )
        for c in criteria
    }


def changed_criteria(previous: Mapping[str, Any] | None, body: Mapping[str, Any]) -> list[str]:
    """Ids of the criteria whose result or reason differ from `previous` (all of them for a
    patient's first result), in the result's order; criteria gone since are listed last."""
    now = _decided(body)
    if previous is None:
        return list(now)
    before = _decided(previous)
    return [c for c in now if before.get(c) != now[c]] + [c for c in before if c not in now]


def change_item(row: StoredResult, disposition: dict[str, Any] | None = None) -> ChangeItem:
    return ChangeItem(
        seq=row.change_seq or 0,
        result_id=row.id,
        patient=row.patient_id,
        study=row.study,
        previous_status=row.previous_status,
        status=row.status,
        changed_criteria=row.changed_criteria,
        trigger=row.trigger,
        source=row.source,
        as_of=row.as_of.isoformat(),
        fingerprint=row.fingerprint,
        created_at=row.created_at.isoformat(),
        result=row.body,
        disposition=disposition,
    )


def disposition_at(entries: Sequence[ReviewEntry], row: StoredResult) -> dict[str, Any] | None:
    """The coordinators' disposition (code, who, when) current when the feed entry `row` was
    made: the newest of the patient's `entries` (oldest first) recorded by then, or None. Read
    at the entry's time, so an entry says the same on every read (exactly once, unchanged)."""
    found = None
    for entry in entries:
        if (entry.patient_id, entry.study) == (row.patient_id, row.study):
            if entry.recorded_at > row.created_at:
                break
            found = entry
    if found is None:
        return None
    return {"code": found.code, "by": found.author, "at": found.recorded_at.isoformat()}


class ResultStore(ClaimStore, OutboxStore):
    """Results over the shared sessions: recording settles the run's patient (claims) and
    queues the write-back (outbox) in the same transaction."""

    # Where a change number is drawn, as a method so a test can slow it down to widen the
    # race between drawing and COMMIT (tests/integration/test_store_postgres.py).
    _next_change_seq = staticmethod(next_change_seq)

    def record_patient_result(
        self,
        run_id: str | None,
        patient_id: str,
        result: Mapping[str, Any],
        fingerprint: str,
        *,
        write_back: bool | None = None,
        trigger: str | None = None,
        source: str | None = None,
    ) -> Recorded:
        """Store a §7 result and mark the run's patient done, in ONE transaction.

        `fingerprint` identifies the result's content (the project's is
        `service.writeback.fingerprint.fingerprint`); equal fingerprints mean "no change", so
        pass the same kind of fingerprint every time. `run_id` None records a result outside
        any run. With `write_back` (default: the run's `write_back`; False without a run) an
        outbox entry is queued in the same transaction, unless the FHIR server has or will
        get this content already: a crash can never keep a result and lose its write-back.
        Returns the new result's id and whether its decision changed.

        `trigger` says why the screen ran (TRIGGERS: subscription, sweep, schedule, request,
        run; a run's patient defaults to "run") and `source` where the data came from (the
        FHIR base URL, 'files:<path>'); both are kept with every result and shown in the
        changes feed, with the previous status and the criteria that changed.

        Current or look back (fhir-contract.md "What the current result is"). A result whose
        as_of is after `today()` is refused (InvalidAsOf). A look back is only stored (with its
        run): it does not replace the latest result, draws no change number, queues no
        write-back, and comes back with `current` False. A look back is a result of a run
        asked for as of an earlier day (`runs.look_back`, decided when the run was created, so
        a run of today that goes on past midnight still gives current results), or, outside a
        run, a result as of a day before today; and any result older (by as_of) than the
        patient's current one, so a late or resumed screen never takes the present back.

        Claims. A run's patient is recorded only while it is pending or claimed by this Store;
        when another process has taken it (this Store's lease ran out) nothing is stored and
        ClaimLost is raised: that process records its own screen.

        Exactly-once changes feed. A changed result draws its `change_seq` from the single
        `change_counter` row with `UPDATE ... SET value = value + 1 RETURNING value`, as the
        transaction's last step before COMMIT. The row lock taken by that UPDATE is held until
        COMMIT, so the next writer of a change waits at the same UPDATE until this one has
        committed (or rolled back, which also rolls the counter back: no gaps). Numbers are
        therefore handed out in commit order, and when a reader can see seq N every seq below
        N is visible too (PostgreSQL marks a transaction committed before it releases its
        locks). A plain sequence would not do this: seq 11 could commit before seq 10, and a
        poller that saw 11 would skip 10 forever. Only changing writers queue at the counter,
        and only for one statement and the commit; unchanged results do not touch it.
        On SQLite all writers are serialised by the database lock anyway.

        Lock order, the same in every transaction so none can deadlock: the patient's
        `latest_results` row, its outbox rows, the run patient row, the counter last.
        """
        body = dict(result)
        study, as_of, status = validated(patient_id, body)
        if not isinstance(fingerprint, str) or not 0 < len(fingerprint) <= FINGERPRINT_LENGTH:
            raise InvalidResult(
                f"a fingerprint must be text of 1 to {FINGERPRINT_LENGTH} characters"
            )
        if run_id is not None and trigger is None:
            trigger = RUN_TRIGGER
        if trigger is not None and trigger not in TRIGGERS:
            raise InvalidResult(f"unknown trigger {trigger!r}: one of {sorted(TRIGGERS)}")
        look_back = self.check_as_of(as_of)
        now = self._now()
        row = {
            "patient_id": patient_id,
            "study": study,
            "as_of": as_of,
            "status": status,
            "trigger": trigger,
            "source": source,
        }
        with self._write() as session:
            if run_id is not None:
                run = session.execute(
                    select(Run.write_back, Run.look_back).where(Run.id == run_id)
                ).first()
                if run is None:
                    raise NotFound(f"run {run_id} not found")
                look_back = bool(run.look_back)
                if write_back is None:
                    write_back = bool(run.write_back)
            if not look_back:
                current = current_as_of(session, patient_id, study)
                look_back = current is not None and as_of < current
            result_id: int = session.execute(
                insert(StoredResult)
                .values(run_id=run_id, fingerprint=fingerprint, body=body, created_at=now, **row)
                .returning(StoredResult.id)
            ).scalar_one()
            changed, previous_id = False, None
            if not look_back:
                changed, previous_id = replace_latest(
                    session,
                    self._insert(LatestResult),
                    self._now(),
                    patient_id,
                    study,
                    result_id,
                    fingerprint,
                )
            if write_back and not look_back:
                self._enqueue(session, patient_id, study, result_id, fingerprint)
            if run_id is not None:
                self._settle_patient(
                    session,
                    run_id,
                    patient_id,
                    {"state": PatientState.DONE.value, "result_id": result_id, "error": None},
                )
            if changed:
                previous = (
                    None
                    if previous_id is None
                    else session.execute(
                        select(StoredResult.status, StoredResult.body).where(
                            StoredResult.id == previous_id
                        )
                    ).first()
                )
                what = {
                    "previous_status": None if previous is None else previous.status,
                    "changed_criteria": changed_criteria(
                        None if previous is None else previous.body, body
                    ),
                }
                seq = self._next_change_seq(session)
                session.execute(
                    update(StoredResult)
                    .where(StoredResult.id == result_id)
                    .values(change_seq=seq, **what)
                    .execution_options(synchronize_session=False)
                )
                set_latest(session, patient_id, study, change_seq=seq)
        return Recorded(result_id, changed, not look_back)

    def latest_result(self, patient_id: str, study: str) -> dict[str, Any] | None:
        """The §7 dict of the patient's newest result for `study`, or None."""
        with self._read() as session:
            return session.scalar(
                select(StoredResult.body)
                .join(LatestResult, LatestResult.result_id == StoredResult.id)
                .where(LatestResult.patient_id == patient_id, LatestResult.study == study)
            )

    def changes(self, cursor: str | None = None, limit: int = 100) -> tuple[list[ChangeItem], str]:
        """Results whose content changed, after `cursor`, in change order (exactly once).

        None starts at the beginning. The returned cursor is never None: an empty page means
        "nothing new yet, ask again with the same cursor". Because change numbers are handed
        out in commit order (see `record_patient_result`), a poller that follows the cursors
        sees every change once, in order, whatever the workers do concurrently.
        """
        check_limit(limit)
        after = 0 if cursor is None else cursors.decode(cursor, cursors.CHANGES_TAG, "")
        with self._read() as session:
            rows = session.scalars(
                select(StoredResult)
                .where(StoredResult.change_seq > after)
                .order_by(StoredResult.change_seq)
                .limit(limit)
            ).all()
            dispositions = session.scalars(
                select(ReviewEntry)
                .where(
                    ReviewEntry.kind == ReviewKind.DISPOSITION.value,
                    ReviewEntry.patient_id.in_({row.patient_id for row in rows}),
                )
                .order_by(ReviewEntry.version)
            ).all()
        items = [change_item(row, disposition_at(dispositions, row)) for row in rows]
        last = items[-1]["seq"] if items else after
        return items, cursors.encode(cursors.CHANGES_TAG, "", last)

    def changes_head(self) -> str:
        """A cursor at the newest change: a new poller that wants only future changes."""
        with self._read() as session:
            value = session.scalar(select(ChangeCounter.value).where(ChangeCounter.id == 1))
        return cursors.encode(cursors.CHANGES_TAG, "", value or 0)
