"""The command line: `medcare-screen screen | load-fixtures | serve`.

Errors reach the user as one line naming what failed and where, never as a stack trace; the
exit status says what happened (0 done, 1 some patients failed, 2 unusable input, settings or
server). Secrets (FHIR credentials) come from the environment, never from arguments.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from datetime import date
from pathlib import Path
from typing import TextIO
from urllib.parse import urlsplit

from service import __version__
from service.config import (
    DEFAULT_SOURCE,
    ConfigError,
    fhir_batch_from_env,
    fhir_limits_from_env,
    read_secret,
    run_search_params_from_env,
    today_from_env,
)
from service.fhir.auth import auth_from_env
from service.fhir.client import FhirClient
from service.fhir.cohort_search import SearchNotAllowed, check_cohort_search
from service.fhir.errors import FhirError
from service.fhir.local_source import LocalSource, SourceError
from service.fhir.ndjson_stream import NdjsonStream
from service.fhir.server_source import PopulationError, ServerSource
from service.mapping import MappingError, load_mappings
from service.population import Screened, screen_record, screen_records, screen_stream
from service.report import Report
from service.screening.engine import Screener
from service.screening.prefilter import line_filter
from service.store import Store, create_store
from service.writeback.fingerprint import fingerprint
from service.writeback.writer import ResultWriter

EXIT_OK, EXIT_PARTIAL, EXIT_INPUT = 0, 1, 2
PROGRESS_EVERY = 50
log = logging.getLogger("medcare_screen")


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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="medcare-screen: %(levelname)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        if args.command == "load-fixtures":
            code = run_load_fixtures(args, sys.stdout, sys.stderr)
        elif args.command == "serve":
            code = run_serve(args)
        else:
            code = run_screen(args, sys.stdout, sys.stderr)
        sys.stdout.flush()  # a full disk or a closed pipe is reported here, not at exit
        return code
    except (SourceError, MappingError, ConfigError, UsageError, FhirError, PopulationError) as exc:
        print(f"medcare-screen: error: {exc}", file=sys.stderr)
        return EXIT_INPUT
    except MemoryError:
        print("medcare-screen: error: out of memory (for a large population, use Bulk Data "
              "NDJSON files, which are screened in bounded memory)", file=sys.stderr)  # fmt: skip
        return EXIT_INPUT
    except OSError as exc:  # a full disk (ENOSPC), a closed output, a file that went away
        _say_os_error(exc)
        return EXIT_INPUT
    except KeyboardInterrupt:
        print("medcare-screen: interrupted", file=sys.stderr)
        return 130


def _say_os_error(exc: OSError) -> None:
    """One line naming the problem ('No space left on device', and the file when known);
    output that can no longer be written is dropped, so exiting does not raise it again."""
    where = f" ({exc.filename})" if exc.filename else ""
    print(f"medcare-screen: error: {exc.strerror or type(exc).__name__}{where}", file=sys.stderr)
    try:
        sys.stdout.flush()
    except OSError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def make_client(base_url: str) -> FhirClient:
    """A FhirClient configured from the environment (auth, CA bundle, batch); never from
    arguments."""
    ca_bundle = os.environ.get("MEDCARE_TLS_CA_BUNDLE")
    return FhirClient(
        base_url,
        auth_from_env(os.environ),
        verify=ca_bundle or True,
        batch=fhir_batch_from_env(os.environ),
        max_answer_bytes=fhir_limits_from_env(os.environ)[0],
        deadline_s=fhir_limits_from_env(os.environ)[1],
    )


def _check_combination(args: argparse.Namespace) -> None:
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
            check_cohort_search(args.search, run_search_params_from_env(os.environ))
        except SearchNotAllowed as exc:
            raise UsageError(f"--search: {exc}") from exc


def run_screen(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    _check_combination(args)
    mappings = load_mappings(args.mappings)
    screener = Screener(mappings)
    as_of = _checked_as_of(args)
    writer = None
    failures = 0
    local: LocalSource | NdjsonStream | None = None
    if args.fhir_base:
        client = make_client(args.fhir_base)
        screened = _server_screens(ServerSource(client, mappings), screener, as_of, args, err)
        if args.write_back:
            writer = ResultWriter(
                client, mappings.parameters, write_ineligible=args.write_ineligible
            )
    else:
        path = args.source or Path(os.environ.get("MEDCARE_SOURCE_PATH") or DEFAULT_SOURCE)
        if NdjsonStream.handles(path):
            local = NdjsonStream(path, line_filter(mappings))
            screened = screen_stream(local, screener, as_of, args.workers, args.patient)
        else:
            if args.workers > 1:
                raise UsageError("--workers needs a Bulk Data NDJSON source (.ndjson files)")
            local = LocalSource(path)
            screened = screen_records(local.records(args.patient), screener, as_of)
    store = None if args.no_store else _open_store(args.database)
    changed = 0
    report = Report()
    for count, item in enumerate(screened, start=1):
        result = item.result
        if result is None:
            failures += 1
            if item.error:  # None: the server could not give this patient; already reported
                log.error("Patient/%s could not be screened (%s)", item.patient_id, item.error)
            continue
        if writer is not None:
            try:
                outcome = writer.write(result)
                print(f"medcare-screen: {result.patient}: write-back {outcome.outcome}", file=err)
            except FhirError as exc:
                failures += 1
                print(f"medcare-screen: {result.patient}: write-back failed: {exc}", file=err)
        if store is not None:
            changed += store.record_patient_result(
                None, result.patient, result.to_dict(), fingerprint(result)
            ).changed
        report.add(result)
        if args.format == "json":
            out.write(json.dumps(result.to_dict(), ensure_ascii=False) + "\n")
        if count % PROGRESS_EVERY == 0:
            print(f"medcare-screen: screened {count} patients", file=err)
    for problem in local.problems if local is not None else ():
        print(f"medcare-screen: warning: {problem}", file=err)
    _print_report(args, report, out, err)
    screened_count = len(report.rows)
    if store is not None:
        where = store.engine.url.render_as_string(hide_password=True)
        changes = (
            f"a look back as of {as_of.isoformat()}: not current results, not in the changes feed"
            if as_of < store.today()
            else f"{changed} changed"
        )
        print(f"medcare-screen: stored {screened_count} results in {where} ({changes})", file=err)
        store.close()
    if not screened_count and not failures:
        print("medcare-screen: warning: no patients found in the source", file=err)
    return EXIT_PARTIAL if failures else EXIT_OK


def _checked_as_of(args: argparse.Namespace) -> date:
    """--as-of, or today (MEDCARE_TODAY, else the clock's date). After today is refused, and
    so is --write-back of a look back (an earlier day): only current results are written."""
    today = today_from_env(os.environ) or date.today()
    as_of: date = args.as_of or today
    if as_of > today:
        raise UsageError(f"--as-of {as_of.isoformat()} is after today ({today.isoformat()})")
    if as_of < today and args.write_back:
        raise UsageError(
            f"--write-back: --as-of {as_of.isoformat()} is a look back (before today, "
            f"{today.isoformat()}); a look back is never written back"
        )
    return as_of


def _open_store(url: str | None) -> Store:
    """The results database (SQLite by default), migrated to the current schema."""
    from service.config import DEFAULT_DATABASE

    url = url or read_secret(os.environ, "MEDCARE_DATABASE_URL")
    if not url:
        DEFAULT_DATABASE.parent.mkdir(parents=True, exist_ok=True)
        url = f"sqlite:///{DEFAULT_DATABASE}"
    store = create_store(url, today=today_from_env(os.environ))
    store.migrate()
    return store


def _server_screens(
    source: ServerSource, screener: Screener, as_of: date, args: argparse.Namespace, err: TextIO
) -> Iterator[Screened]:
    """Each patient's screen; a patient the server could not give is reported on stderr and
    comes out without a result (and without an error name: nothing was screened)."""
    for patient_id in source.patient_ids(search=args.search, group=args.group, ids=args.patient):
        try:
            record = source.record(patient_id)
        except FhirError as exc:
            print(f"medcare-screen: Patient/{patient_id}: {exc}", file=err)
            yield Screened(patient_id, None)
            continue
        for problem in record.problems:
            print(f"medcare-screen: warning: Patient/{patient_id}: {problem}", file=err)
        yield screen_record(screener, record, as_of)
    client = source.client  # which way the server was read, and why (MEDCARE_FHIR_BATCH)
    print(f"medcare-screen: FHIR reads: {client.batch_mode} ({client.batch_mode_reason})", file=err)


def _print_report(args: argparse.Namespace, report: Report, out: TextIO, err: TextIO) -> None:
    if args.format == "table":
        print(report.table(), file=out)
    if args.summary:
        target = out if args.format == "table" else err
        print("", file=target)
        print(report.summary(), file=target)


def run_load_fixtures(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """POST every fixture Bundle as one transaction; deliberately invalid ones are skipped."""
    folder: Path = args.source
    files = sorted(p for p in folder.glob("*.json") if not p.name.endswith(".expected.json"))
    if not files:
        raise SourceError(f"{folder}: no fixture Bundles (*.json) in this folder")
    client = make_client(args.fhir_base)
    loaded = failed = skipped = 0
    for file in files:
        case = file.stem
        if case.startswith("invalid-"):
            skipped += 1
            print(f"medcare-screen: {case}: skipped (deliberately invalid FHIR)", file=err)
            continue
        try:
            bundle = json.loads(file.read_text(encoding="utf-8"))
            client.transaction(bundle, patient=f"Patient/fx-{case}")
            loaded += 1
        except (OSError, ValueError) as exc:
            failed += 1
            print(f"medcare-screen: {file}: not readable ({type(exc).__name__})", file=err)
        except FhirError as exc:
            failed += 1
            print(f"medcare-screen: {case}: {exc}", file=err)
    print(
        f"loaded {loaded} fixture patients into {args.fhir_base} ({skipped} skipped, {failed} failed)",
        file=out,
    )
    return EXIT_PARTIAL if failed else EXIT_OK


def run_serve(args: argparse.Namespace) -> int:
    """gunicorn in production; Flask's development server with --dev (never in production)."""
    from service.config import settings_from_env

    if args.dev:
        os.environ.setdefault("MEDCARE_ENV", "development")
        print("medcare-screen: *** DEVELOPMENT SERVER: not for production ***", file=sys.stderr)
    settings = settings_from_env().check()  # refuse to start without authentication
    if args.dev:
        from service.api import create_app

        create_app(settings).run(host=args.host, port=args.port, threaded=True)
        return EXIT_OK
    from gunicorn.app.base import BaseApplication

    class _Gunicorn(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            self.cfg.set("bind", f"{args.host}:{args.port}")
            self.cfg.set("workers", args.workers)
            self.cfg.set("threads", args.threads)
            self.cfg.set("worker_class", "gthread")
            self.cfg.set("timeout", 120)
            self.cfg.set("accesslog", "-")
            # the access log names paths; patient ids in paths are ids, never names or values
            self.cfg.set("access_log_format", '%(h)s "%(r)s" %(s)s %(b)s %(L)ss')
            # a graceful stop (SIGTERM: a rolling restart) closes each worker's Runtime: its
            # claims go back at once, and its runs are left running for the others to go on
            self.cfg.set("worker_exit", _close_runtimes)

        def load(self) -> object:
            from service.api import create_app

            app = create_app(settings)
            _served.append(app)
            return app

    _Gunicorn().run()
    return EXIT_OK


_served: list[object] = []  # the app of this gunicorn worker process (see run_serve)


def _close_runtimes(_server: object, _worker: object) -> None:
    """gunicorn's worker_exit hook, in the worker, before the interpreter ends (when thread
    pools no longer take work, and a run would fail instead of stopping)."""
    from flask import Flask

    for app in _served:
        if isinstance(app, Flask):
            app.extensions["medcare_runtime"].close()


if __name__ == "__main__":
    raise SystemExit(main())
