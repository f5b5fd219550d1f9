"""`medcare-screen audit export --since --until [--format csv]`: the audit log for a privacy
officer from a shell on the service's host (the HTTP API has GET /v1/audit for the same).

Why here too: a privacy officer's request may come when the API is down or nobody holds the
audit permission; the host's operator then reads the database the environment configures
(MEDCARE_DATABASE_URL). Every page of the range is written, oldest first, and the export is
itself recorded (actor `cli:<operating-system user>`), like the API's.
"""

from __future__ import annotations

import argparse
import getpass
import json
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

from service.audit import entries_csv, entry_row
from service.clock import SYSTEM_CLOCK
from service.settings import settings_from_env
from service.store.audit import MAX_AUDIT_PAGE, AuditEntry

EXIT_OK, EXIT_INPUT = 0, 2


def _moment(text: str) -> datetime:
    """An ISO date or date-time; one without a zone is taken as UTC."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO date or date-time: {text!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def add_audit_parser(commands: Any) -> None:
    """The `audit` subcommand on the CLI's subparsers."""
    audit = commands.add_parser("audit", help="the audit log of every look at patient data")
    actions = audit.add_subparsers(dest="action", required=True)
    export = actions.add_parser("export", help="write the entries of a time range")
    export.add_argument("--since", type=_moment, default=None, help="from (default: a day ago)")
    export.add_argument("--until", type=_moment, default=None, help="before (default: now)")
    export.add_argument("--format", choices=("json", "csv"), default="json")


def run_audit(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Write the range's entries to `out`; one line on `err` and exit 2 for a bad range."""
    from service.compose import make_store

    store = make_store(settings_from_env())
    try:
        until = args.until or SYSTEM_CLOCK.now()
        since = args.since or until - timedelta(days=1)
        if since >= until:
            print("medcare-screen: error: audit export: --since must be before --until", file=err)
            return EXIT_INPUT
        entries = _all(store, since, until)
        store.record_access(f"cli:{getpass.getuser()}", "export", [], 200, "local")
    finally:
        store.close()
    if args.format == "csv":
        out.write(entries_csv(entries))
    else:
        print(json.dumps([entry_row(entry) for entry in entries], indent=1), file=out)
    return EXIT_OK


def _all(store: Any, since: datetime, until: datetime) -> list[AuditEntry]:
    entries: list[AuditEntry] = []
    while page := store.audit_entries(
        since, until, after=entries[-1].id if entries else 0, limit=MAX_AUDIT_PAGE
    ):
        entries.extend(page)
    return entries
