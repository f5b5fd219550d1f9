"""The command line's arguments: the parser, the checks of single values and of combinations.

Why apart from service/cli.py: what a user may type is one concern (and most of the lines);
what the commands do with it is another. Secrets never come from arguments: the FHIR
credentials are settings from the environment (service/settings).
"""

from __future__ import annotations

import argparse
from datetime import date
from pathlib import Path
from urllib.parse import urlsplit

from service import __version__
from service.cli_audit import add_audit_parser
from service.cli_cohort import add_cohort_parser
from service.cli_reports import add_reports_parser
from service.cli_subscriptions import add_subscriptions_parser
from service.fhir.cohort_search import SearchNotAllowed, check_cohort_search
from service.settings import DEFAULT_SOURCE


class UsageError(Exception):
    """A command-line combination that cannot work; the message says which."""


def _as_of(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from exc


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"not a whole number of at least 1: {text!r}")
    return value


def _fhir_base(text: str) -> str:
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise argparse.ArgumentTypeError(f"not an http(s) URL: {text!r}")
    if parts.username or parts.password:
        raise argparse.ArgumentTypeError(
            "credentials do not belong in the URL: use MEDCARE_FHIR_AUTH and its variables"
        )
    return text.rstrip("/")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medcare-screen",
        description="Pre-screen patients for the MEDCARE trial (NCT06585007) from FHIR R4 data.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    screen = commands.add_parser("screen", help="screen patients and print their results")
    where = screen.add_mutually_exclusive_group()
    where.add_argument(
        "--source",
        type=Path,
        default=None,
        help="a Bundle file, a folder of Bundles, or a folder of Bulk Data NDJSON files "
        "(default: the fixture patients)",
    )
    where.add_argument("--fhir-base", type=_fhir_base, help="screen from this FHIR R4 server")
    screen.add_argument(
        "--patient", action="append", metavar="ID", help="screen only this Patient id (repeatable)"
    )
    screen.add_argument("--search", metavar="QUERY", help="with --fhir-base: 'Patient?...' search")
    screen.add_argument("--group", metavar="ID", help="with --fhir-base: the members of a Group")
    screen.add_argument(
        "--as-of", type=_as_of, default=None, help="screening date YYYY-MM-DD (default: today)"
    )
    screen.add_argument(
        "--format",
        choices=("table", "json"),
        default="table",
        help="table for people, json = JSON Lines",
    )
    screen.add_argument("--summary", action="store_true", help="also print the attrition summary")
    screen.add_argument(
        "--write-back",
        action="store_true",
        help="with --fhir-base: write each result back as ResearchSubject + Provenance",
    )
    screen.add_argument(
        "--write-ineligible",
        action="store_true",
        help="with --write-back: also write ineligible patients that have no ResearchSubject yet",
    )
    screen.add_argument(
        "--database",
        metavar="URL",
        default=None,
        help="store results here (default: $MEDCARE_DATABASE_URL, else the SQLite file "
        "var/medcare.sqlite3), so the service's latest-result and changes feed see them",
    )
    screen.add_argument("--no-store", action="store_true", help="do not store the results")
    screen.add_argument(
        "--workers",
        type=_positive,
        default=1,
        metavar="N",
        help="with an NDJSON source: screen in N processes (default 1; at most one per CPU helps)",
    )
    screen.add_argument(
        "--mappings",
        type=Path,
        default=None,
        help="mappings folder (default: the bundled mappings/)",
    )

    load = commands.add_parser(
        "load-fixtures", help="load the fixture patients into a FHIR server (one transaction each)"
    )
    load.add_argument("--fhir-base", type=_fhir_base, required=True)
    load.add_argument(
        "--source", type=Path, default=DEFAULT_SOURCE, help="folder of fixture Bundles"
    )

    serve = commands.add_parser(
        "serve", help="run the HTTP service (gunicorn; settings from MEDCARE_*)"
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=2, help="gunicorn worker processes")
    serve.add_argument("--threads", type=int, default=8, help="threads per worker")
    serve.add_argument(
        "--dev",
        action="store_true",
        help="development mode: Flask's server, MEDCARE_ENV=development (announced loudly)",
    )
    worker = commands.add_parser(
        "worker", help="re-screen queued patients apart from HTTP (settings from MEDCARE_*)"
    )
    worker.add_argument(
        "--concurrency", type=_positive, default=None, metavar="N",
        help="patients screened at once (default: $MEDCARE_RESCREEN_CONCURRENCY, else 2)",
    )  # fmt: skip
    add_cohort_parser(commands)
    add_audit_parser(commands)
    add_subscriptions_parser(commands)
    add_reports_parser(commands)
    return parser


def check_combination(args: argparse.Namespace, run_search_params: tuple[str, ...]) -> None:
    """Refuse flag combinations that cannot work, naming the flags."""
    server_only = [
        flag
        for flag, value in (
            ("--search", args.search),
            ("--group", args.group),
            ("--write-back", args.write_back),
        )
        if value
    ]
    if args.fhir_base and args.workers > 1:
        raise UsageError("--workers needs a Bulk Data NDJSON source, not --fhir-base")
    if server_only and not args.fhir_base:
        raise UsageError(f"{', '.join(server_only)} need(s) --fhir-base")
    if args.write_ineligible and not args.write_back:
        raise UsageError("--write-ineligible needs --write-back")
    if args.search:  # the API's rule: a search selects a cohort, not a person
        try:
            check_cohort_search(args.search, run_search_params)
        except SearchNotAllowed as exc:
            raise UsageError(f"--search: {exc}") from exc


def checked_as_of(args: argparse.Namespace, today: date) -> date:
    """--as-of, or today (MEDCARE_TODAY, else the clock's date). After today is refused, and
    so is --write-back of a look back (an earlier day): only current results are written."""
    as_of: date = args.as_of or today
    if as_of > today:
        raise UsageError(f"--as-of {as_of.isoformat()} is after today ({today.isoformat()})")
    if as_of < today and args.write_back:
        raise UsageError(
            f"--write-back: --as-of {as_of.isoformat()} is a look back (before today, "
            f"{today.isoformat()}); a look back is never written back"
        )
    return as_of
