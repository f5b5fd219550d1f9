"""The audit log (issue 15 item 7): the append-only store with its time-range pages, what the
web pages record (the worklist: one entry per page naming the patients listed), the FHIR
AuditEvent built from an entry and sent without ever failing a request, the CSV export and
`medcare-screen audit export`."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from service.api import create_app
from service.audit import AuditCounters, FhirAuditSink, audit_event, entries_csv
from service.cli import main
from service.runtime import Runtime
from service.store.audit import AuditEntry, AuditStore
from service.store.repository import Store, create_store
from tests.api.conftest import make_settings
from tests.unit.store.helpers import Clock, body, save
from tests.unit.test_web_pages import signed_in

START = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[tuple[Store, Clock]]:
    clock = Clock(START)
    store = create_store(f"sqlite:///{tmp_path / 'audit.sqlite3'}", clock=clock)
    store.migrate()
    yield store, clock
    store.close()


def test_entries_are_kept_with_the_clock_and_read_by_range_in_pages(
    store: tuple[Store, Clock],
) -> None:
    log, clock = store
    first = log.record_access("alice", "patient-page", ["p1"], 200, "10.0.0.1")
    clock.advance(hours=1)
    log.record_access("api-token:abcd1234", "changes", ["p1", "p2"], 200, None)
    clock.advance(hours=1)
    log.record_access("bob", "read-result", ["p3"], 403, "10.0.0.2")
    assert first.recorded_at == START and first.patients == ("p1",)
    everything = log.audit_entries(START, START + timedelta(days=1))
    assert [entry.actor for entry in everything] == ["alice", "api-token:abcd1234", "bob"]
    middle = log.audit_entries(START + timedelta(minutes=30), START + timedelta(hours=2))
    assert [entry.action for entry in middle] == ["changes"]
    page = log.audit_entries(START, START + timedelta(days=1), limit=2)
    rest = log.audit_entries(START, START + timedelta(days=1), after=page[-1].id, limit=2)
    assert [e.id for e in page + rest] == [e.id for e in everything]


def test_the_log_offers_no_way_to_change_or_remove_an_entry() -> None:
    writers = {name for name in vars(AuditStore) if not name.startswith("_")}
    assert writers == {"record_access", "audit_entries"}


def _entry(**overrides: Any) -> AuditEntry:
    fields: dict[str, Any] = {
        "id": 7, "recorded_at": START, "actor": "alice", "action": "patient-page",
        "patients": ("p1", "p2"), "outcome": 200, "client": "10.0.0.1",
    }  # fmt: skip
    return AuditEntry(**(fields | overrides))


def test_the_audit_event_says_who_what_when_and_which_patients_and_no_data() -> None:
    event = audit_event(_entry())
    assert event["resourceType"] == "AuditEvent"
    assert event["type"]["code"] == "rest" and event["subtype"][0]["code"] == "110110"
    assert event["action"] == "R" and event["outcome"] == "0"
    assert event["recorded"] == "2026-11-26T09:00:00+00:00"
    assert event["agent"][0]["who"]["display"] == "alice" and event["agent"][0]["requestor"]
    assert event["agent"][0]["network"]["address"] == "10.0.0.1"
    assert event["source"]["observer"]["display"] == "MEDCARE Screen"
    assert [e["what"]["reference"] for e in event["entity"]] == ["Patient/p1", "Patient/p2"]
    screen = audit_event(_entry(action="screen", outcome=404, client=None))
    assert screen["action"] == "E" and screen["outcome"] == "4"
    assert "network" not in screen["agent"][0]


def test_the_sink_counts_a_failing_server_and_goes_on() -> None:
    written: list[dict[str, Any]] = []
    calls = iter([RuntimeError("down"), None])

    def create(resource: dict[str, Any]) -> None:
        failure = next(calls)
        if failure is not None:
            raise failure
        written.append(resource)

    counters = AuditCounters()
    sink = FhirAuditSink(create, counters)
    sink.put(_entry(id=1))
    sink.put(_entry(id=2))
    sink.join()
    sink.close()
    assert counters.fhir_failures == 1 and counters.fhir_written == 1
    assert written[0]["resourceType"] == "AuditEvent"
    assert not sink.running  # this sink's thread ended (other tests' apps may have their own)


def test_csv_has_a_header_and_disarms_formulas() -> None:
    text = entries_csv([_entry(actor="=HYPERLINK(1)")])
    rows = list(csv.DictReader(io.StringIO(text)))
    assert rows[0]["actor"] == "'=HYPERLINK(1)" and rows[0]["patients"] == "p1 p2"
    assert rows[0]["recorded_at"] == "2026-11-26T09:00:00+00:00"


@pytest.fixture
def web_app(tmp_path: Path) -> Iterator[Flask]:
    settings = make_settings(tmp_path, environment="development")
    runtime = Runtime(settings, start_workers=False)
    for patient in ("w-one", "w-two"):
        save(runtime.store, None, body(f"Patient/{patient}"))
    yield create_app(settings, runtime)
    runtime.close()


def test_the_worklist_page_and_the_patient_page_are_recorded(web_app: Flask) -> None:
    client = signed_in(web_app)
    assert client.get("/worklist").status_code == 200
    assert client.get("/patients/w-two").status_code == 200
    runtime: Runtime = web_app.extensions["medcare_runtime"]
    now = runtime.clock.now()
    entries = runtime.store.audit_entries(now - timedelta(days=1), now + timedelta(days=1))
    pages = [entry for entry in entries if entry.action in ("worklist", "patient-page")]
    worklist, patient = pages[-2:]
    assert worklist.action == "worklist" and set(worklist.patients) == {"w-one", "w-two"}
    assert patient.patients == ("w-two",) and patient.outcome == 200
    assert worklist.actor == patient.actor and worklist.actor != "unauthenticated"


def test_the_command_exports_a_range_and_records_the_export(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'cli.sqlite3'}"
    monkeypatch.setenv("MEDCARE_DATABASE_URL", url)
    store = create_store(url)
    store.migrate()
    store.record_access("alice", "patient-page", ["p1"], 200, "10.0.0.1")
    store.close()
    since = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    assert main(["audit", "export", "--since", since, "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [(row["actor"], row["patients"]) for row in rows] == [("alice", "p1")]
    assert main(["audit", "export", "--since", since]) == 0
    exported = json.loads(capsys.readouterr().out)
    assert [entry["action"] for entry in exported] == ["patient-page", "export"]
    assert exported[1]["actor"].startswith("cli:")
    assert main(["audit", "export", "--since", since, "--until", since]) == 2
