"""`medcare-screen report funnel | screening-log --audience site|sponsor`: the trial team's
reports (issue 15 item 5) from the command line, the same bytes as the API's.

Why a command: a site's monthly screening log goes to the sponsor by file, often from a
machine with database access and no API credential; the sponsor's version is the default, so
an identified log is only written when someone asks for `--audience site`. Errors are one line
naming what is wrong, exit status 2, as the other commands'.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, TextIO

from service.reports.funnel import funnel_svg
from service.reports.screening_log import Audience, screening_log_csv
from service.settings import ConfigError, settings_from_env
from service.store.population_report import PopulationRow

EXIT_OK, EXIT_INPUT = 0, 2


def add_reports_parser(commands: Any) -> None:
    """The `report` subcommand and its two reports, on the CLI's subparsers."""
    report = commands.add_parser("report", help="the funnel (SVG) or the screening log (CSV)")
    kinds = report.add_subparsers(dest="report", required=True)
    kinds.add_parser("funnel", help="the attrition funnel of the current results, as SVG")
    log = kinds.add_parser("screening-log", help="the screening log (ICH-GCP shape), as CSV")
    log.add_argument(
        "--audience", choices=[a.value for a in Audience], default=Audience.SPONSOR.value,
        help="sponsor: de-identified (default); site: with patient ids and full dates",
    )  # fmt: skip
    for kind in kinds.choices.values():
        kind.add_argument("--output", type=Path, help="write to this file (default: stdout)")


def run_reports(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Write one report; one line on `err` and exit 2 for anything wrong."""
    try:
        rows = _population()
        if args.report == "funnel":
            text = funnel_svg(row.body for row in rows)
        else:
            text = screening_log_csv(rows, Audience(args.audience))
        if args.output is None:
            out.write(text)
        else:
            args.output.write_text(text, encoding="utf-8", newline="")
    except (ConfigError, OSError, ValueError) as exc:
        print(f"medcare-screen: error: report {args.report}: {exc}", file=err)
        return EXIT_INPUT
    return EXIT_OK


def _population() -> list[PopulationRow]:
    from service.compose import make_store
    from service.mapping import load_mappings

    settings = settings_from_env()
    study = load_mappings(settings.screening.mappings_dir).parameters.study_id
    store = make_store(settings)
    try:
        return store.current_population(study)
    finally:
        store.close()
