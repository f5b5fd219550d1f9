"""The command line: `medcare-screen screen | load-fixtures | serve | worker`.

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
from typing import Any, TextIO

from service.cli_args import UsageError, build_parser, check_combination, checked_as_of
from service.cli_audit import run_audit
from service.cli_cohort import run_cohort
from service.cli_reports import run_reports
from service.cli_subscriptions import run_subscriptions
from service.compose import compose, make_client, make_store
from service.fhir.errors import FhirError
from service.fhir.local_source import LocalSource, SourceError
from service.fhir.ndjson_stream import NdjsonStream
from service.fhir.server_source import PopulationError, ServerSource
from service.mapping import MappingError
from service.population import Screened, screen_record, screen_records, screen_stream
from service.report import Report
from service.screening.engine import Screener
from service.settings import ConfigError, Settings, settings_from_env
from service.writeback.fingerprint import fingerprint

EXIT_OK, EXIT_PARTIAL, EXIT_INPUT = 0, 1, 2
PROGRESS_EVERY = 50
log = logging.getLogger("medcare_screen")


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="medcare-screen: %(levelname)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        if args.command == "load-fixtures":
            code = run_load_fixtures(args, sys.stdout, sys.stderr)
        elif args.command == "cohort":
            code = run_cohort(args, sys.stdout, sys.stderr)
        elif args.command == "audit":
            code = run_audit(args, sys.stdout, sys.stderr)
        elif args.command == "subscriptions":
            code = run_subscriptions(args, sys.stdout, sys.stderr)
        elif args.command == "report":
            code = run_reports(args, sys.stdout, sys.stderr)
        elif args.command == "serve":
            code = run_serve(args)
        elif args.command == "worker":
            code = run_worker(args)
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


def cli_settings(args: argparse.Namespace) -> Settings:
    """The settings of the environment with this command's flags on top. A server is screened
    (or loaded) only when --fhir-base names it, and written back to only with --write-back,
    whatever the environment says; TLS verification may be off only in development."""
    overrides: dict[str, Any] = {"fhir_base_url": args.fhir_base}
    if args.command == "screen":
        overrides.update(write_back=args.write_back, write_ineligible=args.write_ineligible)
        flags = {"source_path": args.source, "mappings_dir": args.mappings}
        flags["database_url"] = args.database
        overrides.update({name: value for name, value in flags.items() if value is not None})
    return settings_from_env(**overrides).check_fhir()


def run_screen(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    settings = cli_settings(args)
    check_combination(args, settings.api.run_search_params)
    parts = compose(settings)
    as_of = checked_as_of(args, parts.clock.today())
    writer = parts.writer if args.write_back else None
    failures = 0
    source = parts.source
    local: LocalSource | NdjsonStream | None = None
    if isinstance(source, ServerSource):
        screened = _server_screens(source, parts.screener, as_of, args, err)
    elif isinstance(source, NdjsonStream):
        local = source
        screened = screen_stream(source, parts.screener, as_of, args.workers, args.patient)
    else:
        if args.workers > 1:
            raise UsageError("--workers needs a Bulk Data NDJSON source (.ndjson files)")
        local = source
        screened = screen_records(source.records(args.patient), parts.screener, as_of)
    store = None if args.no_store else make_store(settings)
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
    client = make_client(cli_settings(args))
    assert client is not None  # --fhir-base is required
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
    settings = settings_from_env()
    if args.dev:
        if "environment" not in settings.model_fields_set:  # MEDCARE_ENV unset
            settings = settings.with_overrides(environment="development")
        print("medcare-screen: *** DEVELOPMENT SERVER: not for production ***", file=sys.stderr)
    settings = settings.check()  # refuse to start without authentication
    if args.dev:
        from service.api import create_app

        create_app(settings).run(host=args.host, port=args.port, threaded=True)
        return EXIT_OK
    from gunicorn.app.base import BaseApplication

    from service import metrics_dir

    metrics_dir.prepare()  # before any worker imports prometheus_client: /metrics adds them up

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


def run_worker(args: argparse.Namespace) -> int:
    """Background work apart from HTTP until SIGTERM or SIGINT: re-screens of the queue, the
    write-back outbox and interrupted runs, on the database every process shares."""
    import signal
    import threading

    from service.runtime import Runtime

    settings = settings_from_env()
    if args.concurrency:
        settings = settings.with_overrides(rescreen_concurrency=args.concurrency)
    runtime = Runtime(settings, start_workers=False)
    stopped = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopped.set())
    runtime.start_workers()
    runtime.rescreens.start()  # whatever MEDCARE_EMBEDDED_WORKER says: this is the worker
    runtime.scheduler.start()  # sweeps and cohort re-screens, each fired once across processes
    print(f"medcare-screen: worker {runtime.store.owner} started", file=sys.stderr)
    stopped.wait()
    runtime.close()  # what this worker holds goes back to the queue at once
    return EXIT_OK


_served: list[object] = []  # the app of this gunicorn worker process (see run_serve)


def _close_runtimes(_server: object, worker: object) -> None:
    """gunicorn's worker_exit hook, in the worker, before the interpreter ends (when thread
    pools no longer take work, and a run would fail instead of stopping)."""
    from flask import Flask

    from service import metrics_dir

    metrics_dir.worker_exit(getattr(worker, "pid", os.getpid()))
    for app in _served:
        if isinstance(app, Flask):
            app.extensions["medcare_runtime"].close()


if __name__ == "__main__":
    raise SystemExit(main())
