"""`medcare-screen cohort add | list | show | remove | refresh`: the screening population.

Why on the command line too: an integration engineer sets up "every man with prostate cancer"
once, from a shell on the service's host, before any client is written; the HTTP API
(/v1/cohorts) does the same for programs. Both call the use cases of service/cohorts.py on
the database and FHIR server the environment configures (MEDCARE_DATABASE_URL,
MEDCARE_FHIR_BASE_URL), built by the composition root.

Errors are one line naming what is wrong, exit status 2, as the other commands'.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

from service.cohorts import CohortExists, CohortInfo, CohortNotFound, Cohorts, InvalidCohort
from service.errors import SourceUnavailable
from service.settings import settings_from_env

EXIT_OK, EXIT_INPUT = 0, 2


def add_cohort_parser(commands: Any) -> None:
    """The `cohort` subcommand and its actions, on the CLI's subparsers."""
    cohort = commands.add_parser(
        "cohort", help="define the screening population: named searches, Groups or id lists"
    )
    actions = cohort.add_subparsers(dest="action", required=True)
    add = actions.add_parser("add", help="define a cohort and resolve its members now")
    add.add_argument("name", help="1-64 letters, digits, '_', '.', '-'")
    population = add.add_mutually_exclusive_group(required=True)
    population.add_argument(
        "--search", help="a Patient search, e.g. 'Patient?_has:Condition:patient:code=...'"
    )
    population.add_argument("--group", help="a FHIR Group id (its Patient members)")
    population.add_argument("--patients", help="patient ids, comma-separated")
    add.add_argument(
        "--schedule", default=None, metavar="CRON",
        help="when its members are screened again (cron, default '0 2 * * *': nightly)",
    )  # fmt: skip
    actions.add_parser("list", help="every cohort with its member count")
    for action, text in (
        ("show", "one cohort and its members"),
        ("remove", "forget a cohort (results stay)"),
        ("refresh", "resolve a cohort's members again now"),
    ):
        actions.add_parser(action, help=text).add_argument("name")


def run_cohort(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """One cohort action; one line on `err` and exit 2 for anything wrong."""
    try:
        with _cohorts() as cohorts:
            _ACTIONS[args.action](cohorts, args, out)
    except (InvalidCohort, CohortExists, CohortNotFound, SourceUnavailable, ValueError) as exc:
        print(f"medcare-screen: error: cohort {args.action}: {exc}", file=err)
        return EXIT_INPUT
    return EXIT_OK


@contextmanager
def _cohorts() -> Iterator[Cohorts]:
    from service.compose import compose, make_store
    from service.runtime import PatientSourceAdapter

    settings = settings_from_env()
    parts = compose(settings)
    store = make_store(settings)
    try:
        yield Cohorts(store, PatientSourceAdapter(parts.source), settings.api.run_search_params)
    finally:
        store.close()
        parts.close()


def _add(cohorts: Cohorts, args: argparse.Namespace, out: TextIO) -> None:
    patients = args.patients.split(",") if args.patients is not None else None
    given = cohorts.definition(
        search=args.search, group=args.group, patients=patients, schedule=args.schedule
    )
    _say(cohorts.define(args.name, given), "defined", out)


def _list(cohorts: Cohorts, _args: argparse.Namespace, out: TextIO) -> None:
    for info in cohorts.all():
        refreshed = info.refreshed_at.isoformat() if info.refreshed_at else "-"
        spec = ",".join(info.spec) if isinstance(info.spec, list) else info.spec
        print(f"{info.name}\t{info.kind}\t{info.members}\t{info.schedule}\t{refreshed}\t{spec}",
              file=out)  # fmt: skip


def _show(cohorts: Cohorts, args: argparse.Namespace, out: TextIO) -> None:
    shown = {**cohorts.get(args.name).to_dict(), "member_ids": cohorts.members(args.name)}
    print(json.dumps(shown, indent=2), file=out)


def _remove(cohorts: Cohorts, args: argparse.Namespace, out: TextIO) -> None:
    cohorts.remove(args.name)
    print(f"cohort {args.name}: removed", file=out)


def _refresh(cohorts: Cohorts, args: argparse.Namespace, out: TextIO) -> None:
    _say(cohorts.refresh(args.name), "refreshed", out)


def _say(info: CohortInfo, done: str, out: TextIO) -> None:
    print(f"cohort {info.name}: {done}, {info.members} members, schedule {info.schedule!r}",
          file=out)  # fmt: skip


_ACTIONS = {"add": _add, "list": _list, "show": _show, "remove": _remove, "refresh": _refresh}
