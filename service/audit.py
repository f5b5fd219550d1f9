"""What a look at patient data records (issue 15 item 7), and its FHIR AuditEvent.

Why one hook after every request rather than a line in each view: a new view that returns
patient data cannot forget it, and the record carries the HTTP outcome the caller really got
(refusals too: a 403 on a patient is a look someone tried). The hook names the kind of look
from the endpoint, the patients from the address, the request body (a screen, a CDS call) or the
answer's items (the changes feed, a run's results) or what the view left in `g.audit_patients`
(the worklist: one entry per page naming the patients listed). Ids only, never the data.

Recording never fails the user's request: a store or FHIR failure is counted and logged with
ids only. AuditEvents go to the FHIR server from one background thread for the same reason.
"""

from __future__ import annotations

import csv
import io
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, current_app, g, request

from service.store.audit import AuditEntry

log = logging.getLogger("medcare_screen.audit")

# endpoint → the kind of look it is; endpoints not named here return no patient data
ACTIONS: dict[str, str] = {
    "screen.latest_result": "read-result",
    "screen.screen_now": "screen",
    "patients.get_disposition": "read-result",
    "patients.get_manual_answer": "read-result",
    "patients.get_history": "read-result",
    "cds.patient_view": "cds-card",
    "changes.changes": "changes",
    "runs.run_results": "run-results",
    "web.worklist": "worklist",
    "web.patient": "patient-page",
    "audit.export": "export",
    # the screening log names the site's patients (identified) or counts them (sponsor): who took
    # it is recorded; the funnel holds counts only
    "reports.get_screening_log": "export",
    "web.screening_log": "export",
}
# R (read) for looks, E (execute) for a screen: it runs the criteria over the record
FHIR_ACTION = {"screen": "E", "cds-card": "E"}
DCM = "http://dicom.nema.org/resources/ontology/DCM"
AUDIT_EVENT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-event-type"
RESTFUL_INTERACTION = "http://hl7.org/fhir/restful-interaction"
OBSERVER = "MEDCARE Screen"


class AuditCounters:
    """Failures to record, by where they happened (the store, the FHIR server)."""

    def __init__(self) -> None:
        self.store_failures = 0
        self.fhir_failures = 0
        self.fhir_written = 0


def actor() -> str:
    """Who is asking: the signed-in person, the EHR's JWT subject, the API credential."""
    if request.blueprint == "web":
        from service.web.auth import current_user  # the web package imports the api one

        user = current_user()
        return user.sub if user is not None else "unauthenticated"
    if request.blueprint == "cds":
        sub = g.get("cds_claims", {}).get("sub")
        return str(sub) if sub else "unauthenticated"
    principal = g.get("principal")
    if principal is None:
        return "unauthenticated"
    if principal.kind == "token":
        return f"api-token:{principal.subject[:8]}"
    return str(principal.subject)


def client_address(trusted_proxy: bool) -> str | None:
    """The peer's address; the last X-Forwarded-For entry only behind a trusted proxy (which
    appends the address it saw), since any client can write that header itself."""
    if trusted_proxy:
        forwarded = [part.strip() for part in request.headers.get("X-Forwarded-For", "").split(",")]
        if forwarded[-1]:
            return forwarded[-1]
    return request.remote_addr


def patients_of(action: str, response: Response) -> list[str]:
    """The patient ids a look concerned (see the module docstring)."""
    named = g.get("audit_patients")
    if named is not None:
        return _unique(named)
    view_args = request.view_args or {}
    if "patient_id" in view_args:
        return [str(view_args["patient_id"])]
    if action in ("screen", "cds-card"):
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            return []
        context = body.get("context") if action == "cds-card" else None
        patient = context.get("patientId") if isinstance(context, dict) else body.get("patient")
        return [patient] if isinstance(patient, str) else []
    if action in ("changes", "run-results") and response.is_json:
        answer = response.get_json(silent=True)
        items = answer.get("items") if isinstance(answer, dict) else None
        return _unique(item.get("patient") for item in items or [] if isinstance(item, dict))
    return []


def _unique(values: Any) -> list[str]:
    """Each id once, in order; the feed's `Patient/<id>` references as bare ids, like the rest."""
    ids = (value.removeprefix("Patient/") for value in values if isinstance(value, str))
    return list(dict.fromkeys(ids))


def audit_event(entry: AuditEntry, observer: str = OBSERVER) -> dict[str, Any]:
    """The entry as a FHIR R4 AuditEvent: type rest, subtype 110110 Patient Record, action
    R or E, the time recorded, the agent who asked, this service as the source's observer,
    each patient as an entity (ids only; no data of theirs goes in)."""
    outcome = "0" if entry.outcome < 400 else ("4" if entry.outcome < 500 else "8")
    agent: dict[str, Any] = {"who": {"display": entry.actor}, "requestor": True}
    if entry.client:
        agent["network"] = {"address": entry.client, "type": "2"}
    return {
        "resourceType": "AuditEvent",
        "type": {"system": AUDIT_EVENT_TYPE, "code": "rest", "display": "Restful Operation"},
        "subtype": [
            {"system": DCM, "code": "110110", "display": "Patient Record"},
            {
                "system": RESTFUL_INTERACTION,
                "code": "read" if entry.action != "screen" else "operation",
            },
        ],
        "action": FHIR_ACTION.get(entry.action, "R"),
        "recorded": entry.recorded_at.isoformat(),
        "outcome": outcome,
        "outcomeDesc": f"{entry.action}: HTTP {entry.outcome}",
        "agent": [agent],
        "source": {"observer": {"display": observer}},
        "entity": [
            {
                "what": {"reference": f"Patient/{patient}"},
                "role": {
                    "system": "http://terminology.hl7.org/CodeSystem/object-role",
                    "code": "1",
                    "display": "Patient",
                },
            }
            for patient in entry.patients
        ],
    }


class FhirAuditSink:
    """Writes AuditEvents to the FHIR server from one daemon thread, so that a slow or failing
    server never slows or fails the user's request; failures are counted and logged by id."""

    def __init__(self, create: Callable[[dict[str, Any]], Any], counters: AuditCounters) -> None:
        self._create = create
        self._counters = counters
        self._queue: queue.Queue[AuditEntry | None] = queue.Queue(maxsize=10_000)
        self._thread = threading.Thread(target=self._run, name="medcare-audit", daemon=True)
        self._thread.start()

    def put(self, entry: AuditEntry) -> None:
        try:
            self._queue.put_nowait(entry)
        except queue.Full:
            self._counters.fhir_failures += 1
            log.warning("audit entry %s not sent to the FHIR server: queue full", entry.id)

    def close(self, timeout: float = 5.0) -> None:
        self._queue.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        while (entry := self._queue.get()) is not None:
            try:
                self._create(audit_event(entry))
                self._counters.fhir_written += 1
            except Exception as exc:  # any failure is counted, never raised
                self._counters.fhir_failures += 1
                log.warning("audit entry %s not written as AuditEvent: %s", entry.id,
                            type(exc).__name__)  # fmt: skip
            finally:
                self._queue.task_done()

    def join(self) -> None:
        """Wait until every queued entry was tried (tests)."""
        self._queue.join()

    @property
    def running(self) -> bool:
        """Whether the writing thread is still alive (it ends at `close`)."""
        return self._thread.is_alive()


def record_look(action: str, patients: list[str], status: int) -> AuditEntry | None:
    """Append one entry for the current request; None when the store failed (logged)."""
    from service.api import deps  # not at the top: the API imports this module

    runtime = deps.runtime()
    counters: AuditCounters = current_app.extensions["medcare_audit_counters"]
    try:
        entry = runtime.store.record_access(
            actor(), action, patients, status, client_address(runtime.settings.audit_trusted_proxy)
        )
    except Exception as exc:  # the answer stands; counted
        counters.store_failures += 1
        log.error("audit entry for %s not recorded: %s", action, type(exc).__name__)
        return None
    sink: FhirAuditSink | None = current_app.extensions.get("medcare_audit_sink")
    if sink is not None:
        sink.put(entry)
    return entry


def register_audit(app: Flask) -> None:
    """Install the hook (and, with MEDCARE_AUDIT_FHIR and a FHIR server, the AuditEvent sink)
    on an app whose runtime is installed (service.api.deps)."""
    from service.api import deps

    counters = AuditCounters()
    app.extensions["medcare_audit_counters"] = counters
    runtime = app.extensions[deps.RUNTIME]
    client = runtime.client
    if runtime.settings.audit_fhir and client is not None:
        app.extensions["medcare_audit_sink"] = FhirAuditSink(
            lambda resource: client.create(resource), counters
        )

    @app.after_request
    def _record(response: Response) -> Response:
        action = ACTIONS.get(request.endpoint or "")
        if action is None or request.method == "OPTIONS":
            return response
        try:
            patients = patients_of(action, response)
        except Exception:  # a body too large or unreadable: the look is recorded without ids
            patients = []
        record_look(action, patients, response.status_code)
        return response


EXPORT_FIELDS = ("id", "recorded_at", "actor", "action", "patients", "outcome", "client")


def entry_row(entry: AuditEntry) -> dict[str, Any]:
    """One entry as the export shows it (patients joined by spaces in CSV, a list in JSON)."""
    return {
        "id": entry.id, "recorded_at": entry.recorded_at.isoformat(), "actor": entry.actor,
        "action": entry.action, "patients": list(entry.patients), "outcome": entry.outcome,
        "client": entry.client,
    }  # fmt: skip


def entries_csv(entries: list[AuditEntry]) -> str:
    """The entries as CSV with a header row; a cell that a spreadsheet would run as a formula
    is prefixed with a quote (an actor name is whatever the identity provider says)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(EXPORT_FIELDS)
    for entry in entries:
        row = entry_row(entry) | {"patients": " ".join(entry.patients)}
        writer.writerow([_cell(row[name]) for name in EXPORT_FIELDS])
    return buffer.getvalue()


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@") else text
