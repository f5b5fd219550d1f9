"""Cohorts, the screening population: define one, resolve its members, refresh them.

Why cohorts: the service screened only when asked, so nothing told it whose changes matter.
A cohort names a population the way an integration engineer thinks of it ("every man with
prostate cancer": a Patient search; a registry's `Group`; a list of ids) with a cron schedule
for its re-screens. A patient belongs to the screening population when some cohort holds them;
the sweep and the subscription endpoint ignore everyone else's changes (Store.in_population).

A search is held to the run searches' allow-list (service/fhir/cohort_search.py): a cohort
selects by clinical data, never by name or birth date. Searches and Groups are resolved
against the configured FHIR server when the cohort is defined, on `refresh`, and by its
scheduled re-screen (`refresh_members`); a list cohort's members are its list. Patients who
join the population by a definition or a refresh are queued for a screen at once, so the
feed shows them without waiting for the night's re-screen.

Nothing here knows HTTP or the command line: the API view and `medcare-screen cohort` call
these use cases, and errors are domain errors (the API maps them in service/api/error_map.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from croniter import croniter

from service.errors import SourceUnavailable
from service.fhir.cohort_search import check_cohort_search
from service.fhir.errors import FhirError
from service.fhir.record import is_fhir_id, printable
from service.fhir.source import PopulationError
from service.mapping.model import ValueSet
from service.read_plan import search_pairs, token_list
from service.store.cohorts import CohortDefinition, CohortExists, CohortInfo
from service.store.models import DEFAULT_COHORT_SCHEDULE, CohortKind, Trigger
from service.store.rescreen import reference

if TYPE_CHECKING:
    from service.runtime import Runtime
    from service.store import Store

__all__ = [
    "DEFAULT_COHORT_SCHEDULE",
    "CohortDefinition",
    "CohortExists",
    "CohortInfo",
    "CohortNotFound",
    "Cohorts",
    "InvalidCohort",
    "condition_search",
    "definition",
]

# Names appear in URLs, log lines and the queue's `source`: a short slug.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")
MAX_LIST = 100_000  # a list cohort's ids, as a run's
# How the runtime's source names a population (PatientSourceAdapter.patient_ids).
SOURCE_KINDS = {CohortKind.SEARCH.value: "search", CohortKind.GROUP.value: "group"}


class InvalidCohort(ValueError):
    """A cohort definition that cannot be kept; the message names what is wrong."""


class CohortNotFound(LookupError):
    """No cohort of that name."""

    def __init__(self, name: str) -> None:
        super().__init__(f"no cohort named {printable(name)!r}")


class MemberSource(Protocol):
    """Where members come from: the runtime's source (service.runtime.PatientSourceAdapter),
    which lists a Patient search's or a Group's ids and says SourceUnavailable when only a
    FHIR server could."""

    def patient_ids(self, kind: str, spec: Any) -> Iterator[str]: ...


def check_name(name: str) -> str:
    if not NAME.fullmatch(name):
        raise InvalidCohort(
            f"cohort name {printable(name[:80])!r} is not allowed: 1 to 64 letters, digits, "
            "'_', '.' or '-', starting with a letter or digit"
        )
    return name


def check_schedule(schedule: str) -> str:
    """A five-field cron expression (minute hour day month weekday), in the service's time
    zone. Seconds fields are refused: a cohort re-screened every second is a mistake."""
    text = " ".join(schedule.split())
    if len(text.split(" ")) != 5 or not croniter.is_valid(text):
        raise InvalidCohort(
            f"schedule {printable(schedule[:80])!r} is not a five-field cron expression "
            f"(minute hour day month weekday), e.g. {DEFAULT_COHORT_SCHEDULE!r} for nightly"
        )
    return text


def definition(
    *,
    search: str | None = None,
    group: str | None = None,
    patients: Sequence[str] | None = None,
    schedule: str | None = None,
    allowed: Iterable[str],
) -> CohortDefinition:
    """The definition from exactly one of a Patient search, a Group id or a list of ids, and
    an optional schedule; InvalidCohort naming what is wrong, SearchNotAllowed (a ValueError,
    with the parameter) for a search parameter outside `allowed`."""
    given = [what for what, value in (("search", search), ("group", group),
                                      ("patients", patients)) if value is not None]  # fmt: skip
    if len(given) != 1:
        raise InvalidCohort("give exactly one of a Patient search, a Group id or a list of ids")
    when = check_schedule(schedule) if schedule is not None else DEFAULT_COHORT_SCHEDULE
    if search is not None:
        resource_type = search.strip().partition("?")[0]
        if resource_type != "Patient":
            raise InvalidCohort(
                "a cohort search must be a Patient search, e.g. "
                "'Patient?_has:Condition:patient:code=http://snomed.info/sct|399068003'"
            )
        check_cohort_search(search.strip(), allowed)
        return CohortDefinition(CohortKind.SEARCH.value, search.strip(), when)
    if group is not None:
        group_id = group.strip().removeprefix("Group/")
        if not is_fhir_id(group_id):
            raise InvalidCohort(f"Group id {printable(group[:80])!r} is not a FHIR id")
        return CohortDefinition(CohortKind.GROUP.value, group_id, when)
    ids = [p.strip().removeprefix("Patient/") for p in patients or ()]
    bad = next((p for p in ids if not is_fhir_id(p)), None)
    if bad is not None:
        raise InvalidCohort(f"patient id {printable(bad[:80])!r} is not a FHIR id")
    if not 1 <= len(ids) <= MAX_LIST:
        raise InvalidCohort(f"a list cohort holds 1 to {MAX_LIST} patient ids")
    return CohortDefinition(CohortKind.LIST.value, list(dict.fromkeys(ids)), when)


def condition_search(value_set: ValueSet, gender: str | None = None) -> str:
    """The Patient search for everyone with a Condition coded in `value_set` (every exact
    system|code the mapping lists, e.g. SNOMED 399068003 and ICD-10 C61 for prostate cancer),
    of `gender` when given: the README's "every man with prostate cancer" is
    `condition_search(mappings.vs("prostate-cancer"), "male")`."""
    search = f"Patient?_has:Condition:patient:code={token_list(sorted(search_pairs(value_set)))}"
    return search if gender is None else f"{search}&gender={gender}"


class Cohorts:
    """The cohort use cases over the store and the configured source."""

    def __init__(self, store: Store, source: MemberSource, allowed: Iterable[str]) -> None:
        self.store = store
        self.source = source
        self.allowed = tuple(allowed)

    @classmethod
    def of(cls, runtime: Runtime) -> Cohorts:
        """The use cases of a running service (its store, its source, its allow-list)."""
        return cls(runtime.store, runtime.source, runtime.settings.run_search_params)

    def definition(self, **given: Any) -> CohortDefinition:
        """`definition()` with this service's search allow-list."""
        return definition(**given, allowed=self.allowed)

    # -- the definitions ----------------------------------------------------------------------

    def define(self, name: str, cohort: CohortDefinition) -> CohortInfo:
        """Keep a new cohort with its members resolved now (CohortExists when the name is
        taken; nothing is kept when the members cannot be resolved)."""
        check_name(name)
        if self.store.get_cohort(name) is not None:  # before asking the FHIR server
            raise CohortExists(name)
        members = self.resolve(cohort)
        joining = self._joining(members)
        info = self.store.add_cohort(name, cohort, members)
        self._screen_joining(name, joining)
        return info

    def replace(self, name: str, cohort: CohortDefinition) -> CohortInfo:
        """Redefine an existing cohort, its members resolved again (CohortNotFound)."""
        self.get(name)
        members = self.resolve(cohort)
        joining = self._joining(members)
        info = self.store.replace_cohort(name, cohort, members)
        if info is None:
            raise CohortNotFound(name)
        self._screen_joining(name, joining)
        return info

    def get(self, name: str) -> CohortInfo:
        info = self.store.get_cohort(name)
        if info is None:
            raise CohortNotFound(name)
        return info

    def all(self) -> list[CohortInfo]:
        return self.store.list_cohorts()

    def members(self, name: str) -> list[str]:
        """The cohort's members as of its last refresh (references)."""
        self.get(name)
        return self.store.cohort_members(name)

    def remove(self, name: str) -> None:
        """Forget the cohort (its members leave the population unless another cohort holds
        them; their results stay)."""
        if not self.store.remove_cohort(name):
            raise CohortNotFound(name)

    # -- members ------------------------------------------------------------------------------

    def refresh(self, name: str) -> CohortInfo:
        """Resolve the members again now and queue those new to the population for a
        screen; the cohort as refreshed."""
        self.refresh_members(name, screen_joining=True)
        return self.get(name)

    def refresh_members(self, name: str, *, screen_joining: bool = False) -> list[str]:
        """Resolve cohort `name`'s members from its search, Group or list and store them; the
        members (references, sorted). The scheduled re-screen calls this, then queues them
        all; `screen_joining` queues only those new to the population. CohortNotFound;
        SourceUnavailable when the FHIR server fails; InvalidCohort when there is no server
        to ask, or it refuses the search or has no such Group. On failure the members of the
        last refresh stay."""
        info = self.get(name)
        members = self.resolve(info.definition)
        joining = self._joining(members) if screen_joining else []
        if self.store.set_cohort_members(name, members) is None:
            raise CohortNotFound(name)
        self._screen_joining(name, joining)
        return self.store.cohort_members(name)

    def resolve(self, cohort: CohortDefinition) -> list[str]:
        """The patient ids the definition holds now: the list itself, or the FHIR server's
        answer to the search or the Group."""
        if cohort.kind == CohortKind.LIST.value:
            return list(cohort.spec)
        try:
            return list(self.source.patient_ids(SOURCE_KINDS[cohort.kind], cohort.spec))
        except (PopulationError, SourceUnavailable) as exc:
            # the runtime's source says SourceUnavailable for a search or Group asked of files
            raise InvalidCohort(str(exc)) from exc
        except FhirError as exc:
            if exc.status in (400, 404, 410, 422):
                raise InvalidCohort(
                    f"the FHIR server refused the cohort's {cohort.kind} ({exc.status}): {exc}"
                ) from exc
            raise SourceUnavailable(str(exc)) from exc

    def _joining(self, members: Iterable[str]) -> list[str]:
        """Those of `members` not yet in the screening population."""
        wanted = list(members)
        present = self.store.in_population_of(wanted)
        return [m for m in wanted if reference(m) not in present]

    def _screen_joining(self, name: str, joining: list[str]) -> None:
        if joining:
            self.store.enqueue(joining, Trigger.REQUEST.value, source=f"cohort:{name}")
