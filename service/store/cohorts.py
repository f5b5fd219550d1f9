"""Cohorts and their members: who the screening population is (issue 14 item 1).

A cohort is named, and is a FHIR search, a Group or a list of patient ids (`kind`, `spec`), with
a cron schedule for its re-screens. Its members are kept as of the cohort's last refresh: the
search or Group is resolved against the FHIR server by the use cases (service/cohorts.py), never
here; this concern stores what they found.

Why members are stored rather than resolved on demand: the sweep and the subscription endpoint
ask "is this patient one of ours?" for every change they see, many times a second; one indexed
read answers it, where a FHIR search per change would not. A patient belongs to the screening
population when some cohort holds them (`in_population`).

Members are kept as references ("Patient/<id>"), the spelling results and the re-screen queue
use; callers may pass either spelling.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.store.base import StoreBase
from service.store.errors import StoreError
from service.store.models import DEFAULT_COHORT_SCHEDULE, Cohort, CohortKind, CohortMember
from service.store.rescreen import ENQUEUE_CHUNK, reference

KINDS = frozenset(kind.value for kind in CohortKind)


class CohortExists(StoreError):
    """A cohort of that name is already defined (names are unique; replace it instead)."""

    def __init__(self, name: str) -> None:
        super().__init__(f"a cohort named {name!r} already exists")
        self.name = name


@dataclass(frozen=True)
class CohortDefinition:
    """What a cohort is: `kind` (search | group | list), its `spec` (the search text, the
    Group id, or the list of ids) and the cron `schedule` of its re-screens."""

    kind: str
    spec: Any
    schedule: str = DEFAULT_COHORT_SCHEDULE

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown cohort kind {self.kind!r} (one of {sorted(KINDS)})")

    def columns(self, now: datetime) -> dict[str, Any]:
        """The cohort row's columns for this definition, changed at `now`."""
        return {"kind": self.kind, "spec": self.spec, "schedule": self.schedule, "updated_at": now}


@dataclass(frozen=True)
class CohortInfo:
    """One cohort as stored, with how many members its last refresh found and when."""

    name: str
    kind: str
    spec: Any
    schedule: str
    created_at: datetime
    updated_at: datetime
    members: int
    refreshed_at: datetime | None

    @property
    def definition(self) -> CohortDefinition:
        return CohortDefinition(self.kind, self.spec, self.schedule)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "spec": self.spec,
            "schedule": self.schedule,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
            "members": self.members,
            "refreshed_at": self.refreshed_at.isoformat() if self.refreshed_at else None,
        }


class CohortStore(StoreBase):
    """Cohorts and their members over the shared sessions (see the module docstring)."""

    def add_cohort(
        self, name: str, cohort: CohortDefinition, members: Iterable[str] | None = None
    ) -> CohortInfo:
        """Define a cohort, with its `members` when known (a list, or a search resolved just
        now), in one transaction. CohortExists when the name is taken."""
        now = self._now()
        try:
            with self._write() as session:
                session.add(Cohort(name=name, created_at=now, **cohort.columns(now)))
                session.flush()
                if members is not None:
                    self._put_members(session, name, members, now)
        except IntegrityError as exc:
            raise CohortExists(name) from exc
        info = self.get_cohort(name)
        assert info is not None
        return info

    def replace_cohort(
        self, name: str, cohort: CohortDefinition, members: Iterable[str] | None = None
    ) -> CohortInfo | None:
        """Redefine an existing cohort (and its members when given: else the old members are
        dropped until the next refresh). None when there is no such cohort."""
        now = self._now()
        with self._write() as session:
            updated = session.scalars(
                update(Cohort).where(Cohort.name == name).values(**cohort.columns(now))
                .returning(Cohort.name)
            ).all()  # fmt: skip
            if not updated:
                return None
            self._put_members(session, name, members or (), now)
        return self.get_cohort(name)

    def set_cohort_members(self, name: str, members: Iterable[str]) -> int | None:
        """Replace the members of cohort `name` with `members` (a refresh); how many there are
        now, None when there is no such cohort."""
        now = self._now()
        with self._write() as session:
            if session.get(Cohort, name, with_for_update=True) is None:
                return None
            return self._put_members(session, name, members, now)

    @staticmethod
    def _put_members(session: Session, name: str, members: Iterable[str], now: datetime) -> int:
        session.execute(delete(CohortMember).where(CohortMember.cohort == name))
        wanted = sorted({reference(patient_id) for patient_id in members})
        for start in range(0, len(wanted), ENQUEUE_CHUNK):
            session.execute(
                insert(CohortMember),
                [
                    {"cohort": name, "patient_id": patient_id, "refreshed_at": now}
                    for patient_id in wanted[start : start + ENQUEUE_CHUNK]
                ],
            )
        return len(wanted)

    def remove_cohort(self, name: str) -> bool:
        """Forget a cohort and its members; whether there was one. Its patients leave the
        screening population unless another cohort holds them; their results stay."""
        with self._write() as session:
            session.execute(delete(CohortMember).where(CohortMember.cohort == name))
            gone = session.scalars(delete(Cohort).where(Cohort.name == name).returning(Cohort.name))
            return bool(gone.all())

    def get_cohort(self, name: str) -> CohortInfo | None:
        found = self._cohorts(Cohort.name == name)
        return found[0] if found else None

    def list_cohorts(self) -> list[CohortInfo]:
        """Every cohort, by name."""
        return self._cohorts()

    def _cohorts(self, *where: Any) -> list[CohortInfo]:
        counted = (
            select(
                CohortMember.cohort,
                func.count().label("members"),
                func.max(CohortMember.refreshed_at).label("refreshed_at"),
            )
            .group_by(CohortMember.cohort)
            .subquery()
        )
        query = (
            select(Cohort, counted.c.members, counted.c.refreshed_at)
            .outerjoin(counted, counted.c.cohort == Cohort.name)
            .where(*where)
            .order_by(Cohort.name)
        )
        with self._read() as session:
            rows = session.execute(query).all()
        return [
            CohortInfo(c.name, c.kind, c.spec, c.schedule, c.created_at, c.updated_at,
                       int(members or 0), refreshed_at)
            for c, members, refreshed_at in rows
        ]  # fmt: skip

    def cohort_members(self, name: str) -> list[str]:
        """The members of cohort `name` as of its last refresh (references, sorted)."""
        query = (
            select(CohortMember.patient_id)
            .where(CohortMember.cohort == name)
            .order_by(CohortMember.patient_id)
        )
        with self._read() as session:
            return list(session.scalars(query))

    def in_population(self, patient_id: str) -> bool:
        """Whether some cohort holds the patient (an id or a reference)."""
        query = select(CohortMember.patient_id).where(
            CohortMember.patient_id == reference(patient_id)
        )
        with self._read() as session:
            return session.scalar(query.limit(1)) is not None

    def in_population_of(self, patient_ids: Iterable[str]) -> set[str]:
        """Those of `patient_ids` (ids or references) some cohort holds, as references: one
        read for the patients of a sweep's page instead of one per patient."""
        wanted = sorted({reference(patient_id) for patient_id in patient_ids})
        found: set[str] = set()
        with self._read() as session:
            for start in range(0, len(wanted), ENQUEUE_CHUNK):
                chunk = wanted[start : start + ENQUEUE_CHUNK]
                query = select(CohortMember.patient_id).where(CohortMember.patient_id.in_(chunk))
                found.update(session.scalars(query.distinct()))
        return found

    def population_ids(self) -> list[str]:
        """Every patient some cohort holds, once each (references, sorted)."""
        query = select(CohortMember.patient_id).distinct().order_by(CohortMember.patient_id)
        with self._read() as session:
            return list(session.scalars(query))
