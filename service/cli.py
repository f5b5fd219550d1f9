"""The command line: `medcare-screen screen ...` (and, later, serve / load-fixtures).

Errors reach the user as one line naming what failed and where, never as a stack trace; the
exit status says what happened (0 done, 1 some patients failed, 2 unusable input or mappings).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import TextIO

from service import __version__
from service.fhir.local_source import LocalSource, SourceError
from service.mapping import MappingError, load_mappings
from service.report import attrition_summary, results_table
from service.screening.engine import Screener
from service.screening.result import ScreenResult

DEFAULT_SOURCE = Path(__file__).resolve().parents[1] / "fixtures" / "patients"
EXIT_OK, EXIT_PARTIAL, EXIT_INPUT = 0, 1, 2
PROGRESS_EVERY = 50
log = logging.getLogger("medcare_screen")


def _as_of(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from exc


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medcare-screen",
        description="Pre-screen patients for the MEDCARE trial (NCT06585007) from FHIR R4 data.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    screen = commands.add_parser("screen", help="screen patients and print their results")
    screen.add_argument(
        "--source",
        type=Path,
        default=DEFAULT_SOURCE,
        help="a Bundle file, a folder of Bundles, or a folder of Bulk Data NDJSON files "
        "(default: the fixture patients)",
    )
    screen.add_argument(
        "--patient", action="append", metavar="ID", help="screen only this Patient id (repeatable)"
    )
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
        "--mappings",
        type=Path,
        default=None,
        help="mappings folder (default: the bundled mappings/)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="medcare-screen: %(levelname)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return run_screen(args, sys.stdout, sys.stderr)
    except (SourceError, MappingError) as exc:
        print(f"medcare-screen: error: {exc}", file=sys.stderr)
        return EXIT_INPUT
    except KeyboardInterrupt:
        print("medcare-screen: interrupted", file=sys.stderr)
        return 130


def run_screen(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    screener = Screener(load_mappings(args.mappings))
    as_of = args.as_of or date.today()
    source = LocalSource(args.source)
    results: list[ScreenResult] = []
    failures = 0
    for count, record in enumerate(source.records(args.patient), start=1):
        try:
            result = screener.screen(record, as_of)
        except Exception as exc:  # a bug must not cost the other patients their screen
            failures += 1
            log.error(
                "Patient/%s could not be screened (%s)", record.patient_id, type(exc).__name__
            )
            continue
        results.append(result)
        if args.format == "json":
            out.write(json.dumps(result.to_dict(), ensure_ascii=False, sort_keys=False) + "\n")
        if count % PROGRESS_EVERY == 0:
            print(f"medcare-screen: screened {count} patients", file=err)
    for problem in source.problems:
        print(f"medcare-screen: warning: {problem}", file=err)
    if args.format == "table":
        print(results_table(results), file=out)
    if args.summary:
        print("", file=out if args.format == "table" else err)
        print(attrition_summary(results), file=out if args.format == "table" else err)
    if not results and not failures:
        print("medcare-screen: warning: no patients found in the source", file=err)
    return EXIT_PARTIAL if failures else EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
