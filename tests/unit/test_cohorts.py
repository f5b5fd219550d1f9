"""Cohorts (issue 14 item 1): the store's cohorts and members, the definitions it accepts, and
the use cases resolving members from a source, on a SQLite file."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from service.cli import main
from service.cohorts import (
    CohortDefinition,
    CohortExists,
    CohortNotFound,
    Cohorts,
    InvalidCohort,
    check_schedule,
    definition,
)
from service.errors import SourceUnavailable
from service.fhir.cohort_search import SearchNotAllowed
from service.fhir.errors import FhirError
from service.settings import DEFAULT_RUN_SEARCH_PARAMS
from service.store import Store
from tests.unit.store.helpers import Clock

PROSTATE = "Patient?_has:Condition:patient:code=http://snomed.info/sct|399068003&gender=male"


class FakeSource:
    """The runtime's source as cohorts use it: the ids a search or Group answers now, or a
    FHIR error."""

    def __init__(self) -> None:
        self.answers: dict[tuple[str, Any], list[str] | Exception] = {}
        self.asked: list[tuple[str, Any]] = []

    def patient_ids(self, kind: str, spec: Any) -> Iterator[str]:
        self.asked.append((kind, spec))
        answer = self.answers[(kind, spec)]
        if isinstance(answer, Exception):
            raise answer
        yield from answer


@pytest.fixture
def source() -> FakeSource:
    return FakeSource()


@pytest.fixture
def cohorts(store: Store, source: FakeSource) -> Cohorts:
    return Cohorts(store, source, DEFAULT_RUN_SEARCH_PARAMS)


# -- the store -------------------------------------------------------------------------------


def test_store_keeps_a_cohort_and_its_members(store: Store, clock: Clock) -> None:
    info = store.add_cohort(
        "pc", CohortDefinition("list", ["a", "b"]), members=["a", "Patient/b", "a"]
    )
    assert (info.name, info.kind, info.spec, info.schedule) == (
        "pc",
        "list",
        ["a", "b"],
        "0 2 * * *",
    )
    assert info.members == 2 and info.refreshed_at == clock.now == info.created_at
    assert store.cohort_members("pc") == ["Patient/a", "Patient/b"]
    assert store.get_cohort("pc") == info and store.list_cohorts() == [info]
    assert store.get_cohort("nope") is None


def test_a_name_is_defined_once(store: Store) -> None:
    store.add_cohort("pc", CohortDefinition("list", ["a"]), members=["a"])
    with pytest.raises(CohortExists, match="'pc' already exists"):
        store.add_cohort("pc", CohortDefinition("search", PROSTATE))
    assert store.cohort_members("pc") == ["Patient/a"]  # the first one is untouched


def test_an_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown cohort kind"):
        CohortDefinition("people", [])


def test_replace_and_refresh_swap_the_members(store: Store, clock: Clock) -> None:
    store.add_cohort("pc", CohortDefinition("list", ["a"]), members=["a"])
    clock.advance(hours=1)
    info = store.replace_cohort(
        "pc", CohortDefinition("search", PROSTATE, "30 3 * * 1"), members=["b", "c"]
    )
    assert info is not None
    assert (info.kind, info.spec, info.schedule, info.members) == (
        "search",
        PROSTATE,
        "30 3 * * 1",
        2,
    )
    assert info.updated_at == clock.now > info.created_at
    assert store.set_cohort_members("pc", ["c", "d", "e"]) == 3
    assert store.cohort_members("pc") == ["Patient/c", "Patient/d", "Patient/e"]
    assert store.replace_cohort("nope", CohortDefinition("list", ["a"])) is None
    assert store.set_cohort_members("nope", ["a"]) is None


def test_population_is_every_patient_some_cohort_holds(store: Store) -> None:
    store.add_cohort("one", CohortDefinition("list", ["a", "b"]), members=["a", "b"])
    store.add_cohort("two", CohortDefinition("list", ["b", "c"]), members=["b", "c"])
    assert store.population_ids() == ["Patient/a", "Patient/b", "Patient/c"]
    assert store.in_population("a") and store.in_population("Patient/c")
    assert not store.in_population("d")
    assert store.in_population_of(["a", "Patient/c", "d"]) == {"Patient/a", "Patient/c"}
    assert store.remove_cohort("one") and not store.remove_cohort("one")
    assert not store.in_population("a")
    assert store.in_population("b")  # still held by "two"
    assert store.population_ids() == ["Patient/b", "Patient/c"]


def test_population_of_many_patients_is_read_in_chunks(store: Store) -> None:
    ids = [f"p{i}" for i in range(1200)]
    store.add_cohort("big", CohortDefinition("list", ids), members=ids)
    assert len(store.in_population_of([*ids, "other"])) == 1200
    assert store.get_cohort("big").members == 1200  # type: ignore[union-attr]


# -- definitions -----------------------------------------------------------------------------


def test_a_definition_is_one_of_a_search_a_group_or_a_list() -> None:
    allowed = DEFAULT_RUN_SEARCH_PARAMS
    assert definition(search=f" {PROSTATE} ", allowed=allowed) == CohortDefinition(
        "search", PROSTATE, "0 2 * * *"
    )
    assert definition(group="Group/g-1", schedule="0  4 * * *", allowed=allowed) == (
        CohortDefinition("group", "g-1", "0 4 * * *")
    )
    assert definition(patients=["a", "Patient/b", "a"], allowed=allowed).spec == ["a", "b"]
    with pytest.raises(InvalidCohort, match="exactly one"):
        definition(search=PROSTATE, group="g", allowed=allowed)
    with pytest.raises(InvalidCohort, match="exactly one"):
        definition(allowed=allowed)


@pytest.mark.parametrize(
    ("given", "refusal"),
    [
        ({"search": "Observation?code=x"}, "must be a Patient search"),
        ({"group": "g 1"}, "Group id 'g 1' is not a FHIR id"),
        ({"patients": ["a", "b\nc"]}, "is not a FHIR id"),
        ({"patients": []}, "1 to 100000 patient ids"),
        ({"patients": ["a"], "schedule": "* * * * * *"}, "five-field cron"),
        ({"patients": ["a"], "schedule": "61 2 * * *"}, "five-field cron"),
        ({"patients": ["a"], "schedule": "nightly"}, "five-field cron"),
    ],
)
def test_a_definition_that_cannot_be_kept_is_refused_naming_why(
    given: dict[str, Any], refusal: str
) -> None:
    with pytest.raises(InvalidCohort, match=refusal):
        definition(**given, allowed=DEFAULT_RUN_SEARCH_PARAMS)


def test_a_search_selects_by_clinical_data_not_people() -> None:
    with pytest.raises(SearchNotAllowed) as refused:
        definition(search="Patient?family=Smith&gender=male", allowed=DEFAULT_RUN_SEARCH_PARAMS)
    assert refused.value.parameter == "family"


def test_schedules_are_cron() -> None:
    assert check_schedule("*/15 * * * *") == "*/15 * * * *"
    assert check_schedule(" 0 2 * * 1-5 ") == "0 2 * * 1-5"


@pytest.mark.parametrize("name", ["", "-x", "a b", "x" * 65, "a/b", "é"])
def test_names_are_short_slugs(cohorts: Cohorts, name: str) -> None:
    with pytest.raises(InvalidCohort, match="cohort name"):
        cohorts.define(name, CohortDefinition("list", ["a"]))


# -- the use cases ---------------------------------------------------------------------------


def test_a_search_cohort_is_resolved_when_defined_and_joiners_queued(
    cohorts: Cohorts, store: Store, source: FakeSource
) -> None:
    store.add_cohort("known", CohortDefinition("list", ["a"]), members=["a"])
    source.answers[("search", PROSTATE)] = ["a", "b", "c"]
    info = cohorts.define("prostate", cohorts.definition(search=PROSTATE))
    assert info.members == 3 and info.kind == "search"
    assert store.cohort_members("prostate") == ["Patient/a", "Patient/b", "Patient/c"]
    assert store.depth() == 2  # b and c joined the population; a was in it already


def test_a_list_cohort_needs_no_server(cohorts: Cohorts, store: Store, source: FakeSource) -> None:
    cohorts.define("few", cohorts.definition(patients=["x", "y"]))
    assert cohorts.members("few") == ["Patient/x", "Patient/y"] and source.asked == []
    assert cohorts.refresh("few").members == 2


def test_a_group_cohort_reads_the_group(cohorts: Cohorts, source: FakeSource) -> None:
    source.answers[("group", "registry")] = ["g1", "g2"]
    assert cohorts.define("reg", cohorts.definition(group="registry")).members == 2
    assert source.asked == [("group", "registry")]


def test_refresh_replaces_members_and_queues_only_newcomers(
    cohorts: Cohorts, store: Store, source: FakeSource, clock: Clock
) -> None:
    source.answers[("search", PROSTATE)] = ["a", "b"]
    cohorts.define("prostate", cohorts.definition(search=PROSTATE))
    clock.advance(minutes=1)
    for task in store.take_rescreens(10):  # screened meanwhile: the queue is empty
        store.finish_rescreen(task.patient_id)
    assert store.depth() == 0
    source.answers[("search", PROSTATE)] = ["b", "c"]
    assert cohorts.refresh_members("prostate") == ["Patient/b", "Patient/c"]
    assert not store.in_population("a")
    source.answers[("search", PROSTATE)] = ["b", "c", "d"]
    assert cohorts.refresh("prostate").members == 3
    clock.advance(minutes=1)
    assert [task.patient_id for task in store.take_rescreens(10)] == ["Patient/d"]


def test_a_failed_refresh_keeps_the_members_it_had(
    cohorts: Cohorts, store: Store, source: FakeSource
) -> None:
    source.answers[("search", PROSTATE)] = ["a", "b"]
    cohorts.define("prostate", cohorts.definition(search=PROSTATE))
    source.answers[("search", PROSTATE)] = FhirError("server down", status=503)
    with pytest.raises(SourceUnavailable):
        cohorts.refresh_members("prostate")
    source.answers[("search", PROSTATE)] = FhirError("bad search", status=400)
    with pytest.raises(InvalidCohort, match="refused the cohort's search"):
        cohorts.refresh("prostate")
    assert store.cohort_members("prostate") == ["Patient/a", "Patient/b"]


def test_a_definition_that_cannot_be_resolved_keeps_nothing(
    cohorts: Cohorts, store: Store, source: FakeSource
) -> None:
    source.answers[("group", "gone")] = FhirError("not found", status=404)
    with pytest.raises(InvalidCohort):
        cohorts.define("reg", cohorts.definition(group="gone"))
    source.answers[("search", PROSTATE)] = SourceUnavailable("needs a FHIR server")
    with pytest.raises(InvalidCohort, match="needs a FHIR server"):
        cohorts.define("files", cohorts.definition(search=PROSTATE))
    assert store.list_cohorts() == [] and store.depth() == 0


def test_unknown_and_duplicate_names(cohorts: Cohorts, source: FakeSource) -> None:
    cohorts.define("few", cohorts.definition(patients=["x"]))
    source.answers[("search", PROSTATE)] = ["a"]
    with pytest.raises(CohortExists):
        cohorts.define("few", cohorts.definition(search=PROSTATE))
    assert source.asked == []  # refused before the server is asked
    for call in (cohorts.get, cohorts.members, cohorts.remove, cohorts.refresh,
                 cohorts.refresh_members):  # fmt: skip
        with pytest.raises(CohortNotFound, match="no cohort named 'nope'"):
            call("nope")
    with pytest.raises(CohortNotFound):
        cohorts.replace("nope", cohorts.definition(patients=["x"]))
    replaced = cohorts.replace("few", cohorts.definition(search=PROSTATE, schedule="0 5 * * *"))
    assert (replaced.kind, replaced.schedule, replaced.members) == ("search", "0 5 * * *", 1)
    cohorts.remove("few")
    assert cohorts.all() == []


# -- the command line ------------------------------------------------------------------------


def test_the_cohort_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cohort", "add", "few", "--patients", "fx-base,fx-age-17"]) == 0
    assert "cohort few: defined, 2 members, schedule '0 2 * * *'" in capsys.readouterr().out
    assert main(["cohort", "list"]) == 0
    assert capsys.readouterr().out.startswith("few\tlist\t2\t0 2 * * *\t")
    assert main(["cohort", "show", "few"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["member_ids"] == ["Patient/fx-age-17", "Patient/fx-base"]
    assert main(["cohort", "refresh", "few"]) == 0
    assert main(["cohort", "remove", "few"]) == 0
    assert "cohort few: removed" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["add", "few", "--search", "Patient?name=Smith"], "parameter 'name' is not allowed"),
        (["add", "few", "--search", "Patient?gender=male"], "need a FHIR server"),
        (["add", "few", "--patients", "a", "--schedule", "daily"], "not a five-field cron"),
        (["add", "a b", "--patients", "a"], "cohort name 'a b' is not allowed"),
        (["show", "nope"], "no cohort named 'nope'"),
        (["remove", "nope"], "no cohort named 'nope'"),
    ],
)
def test_cohort_errors_are_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], argv: list[str], says: str
) -> None:
    assert main(["cohort", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"medcare-screen: error: cohort {argv[0]}: ") and says in err
    assert err.count("\n") == 1 and "Traceback" not in err
