"""Faults of the FHIR server during a run: the real Runtime in this process, the real Medplum
peer behind the fault proxy, SQLite. Each test checks the run invariants of harness.check_run
and records its figures."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from service.fhir.client import RetryPolicy
from service.runtime import Runtime
from tests.conftest import FIXTURES
from tests.reliability import harness
from tests.reliability.conftest import Medplum
from tests.reliability.faultproxy import Fault, FaultProxy, Request, add_next_link

pytestmark = pytest.mark.timeout(120)

PATIENTS = 24  # per run: enough to be mid-run when the fault starts, quick when it is over


@pytest.fixture
def runtime(proxy: FaultProxy, sqlite_url: str) -> Iterator[Runtime]:
    rt = harness.make_runtime(proxy.base_url + "/fhir", sqlite_url)
    yield rt
    rt.close()


def _start(runtime: Runtime, patients: list[str], write_back: bool = False) -> str:
    return runtime.start_run("ids", patients, harness.AS_OF, write_back).id


def _run(
    runtime: Runtime, patients: list[str], within_s: float, write_back: bool = False
) -> tuple[str, dict[str, Any]]:
    """Start a run of these patients, wait up to `within_s` for its end, check its invariants
    (harness.check_run): the run's id and its figures."""
    run_id = _start(runtime, patients, write_back)
    harness.wait_run(runtime, run_id, within_s)
    return run_id, harness.check_run(runtime, run_id, patients)


def _record(
    what: str, patients: list[str], figures: dict[str, Any], started: float, **fault: Any
) -> None:
    """Record a fault run's figures: its patients, what the fault did, done, failed, seconds."""
    harness.record(
        f"fault: {what}", patients=len(patients), **fault,
        done=figures["done"], failed=figures["failed"],
        run_seconds=round(time.monotonic() - started, 1),
    )  # fmt: skip


def _patient_in(request: Request, patient: str) -> bool:
    """The request is about this patient (its batch, or a page of one of its searches)."""
    return f"patient={patient}&" in request.path or f'Patient/{patient}"' in request.text


def _expected_status(patient: str) -> str:
    case = patient.removeprefix("fx-")
    return str(json.loads((FIXTURES / f"{case}.expected.json").read_text())["status"])


def test_fhir_server_stopped_mid_run(runtime: Runtime, proxy: FaultProxy, medplum: Medplum) -> None:
    """The server goes away for 12 s (longer than one request's retry budget of 7.5 s) while
    a run is half done, then comes back: every patient is screened, none failed."""
    patients = medplum.patients[:PATIENTS]
    proxy.add(Fault("delay", seconds=0.05))
    started = time.monotonic()
    run_id = _start(runtime, patients)
    harness.wait_until(lambda: runtime.store.run_progress(run_id)["done"] >= 6, 30, "6 done")
    proxy.down()
    down_at = time.monotonic()
    time.sleep(12)
    during = runtime.store.run_progress(run_id)
    proxy.up()
    run = harness.wait_run(runtime, run_id, 90)
    figures = harness.check_run(runtime, run_id, patients)
    assert figures["failed"] == 0, figures["reasons"]
    assert during["done"] < len(patients), "the outage did not hit the run"
    harness.record(
        "fault: FHIR server stopped mid-run",
        patients=len(patients), outage_s=12, done_before_outage=during["done"],
        done=figures["done"], failed=figures["failed"],
        recovered_after_s=round(time.monotonic() - down_at - 12, 1),
        run_seconds=round(time.monotonic() - started, 1), status=run["status"],
    )  # fmt: skip


def test_fhir_server_stopped_for_good_fails_patients_with_reason(
    runtime: Runtime, proxy: FaultProxy, medplum: Medplum, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server never comes back: the run still ends, each patient failed with the reason."""
    monkeypatch.setattr("service.work.runs.RUN_RETRY_DELAYS_S", (0.2, 0.2))
    runtime.client.policy = RetryPolicy(retries=1, backoff_factor=0.1)  # type: ignore[union-attr]
    patients = medplum.patients[:6]
    proxy.down()
    started = time.monotonic()
    _, figures = _run(runtime, patients, 60)
    assert figures["failed"] == len(patients)
    for reason in figures["reasons"].values():
        assert "no answer from the FHIR server" in reason and "connection failed" in reason
    harness.record(
        "fault: FHIR server gone for good",
        patients=len(patients), failed=figures["failed"],
        reason=next(iter(figures["reasons"].values())),
        run_seconds=round(time.monotonic() - started, 1),
    )  # fmt: skip


def test_responses_slower_than_the_timeout(
    runtime: Runtime, proxy: FaultProxy, medplum: Medplum
) -> None:
    """Every third request answers after 1.5 s, the client gives up after 1 s: retried."""
    runtime.client.timeout = (2.0, 1.0)  # type: ignore[union-attr]
    patients = medplum.patients[:16]
    slow = proxy.add(Fault("delay", seconds=1.5, every=3))
    started = time.monotonic()
    _, figures = _run(runtime, patients, 90)
    assert figures["failed"] == 0, figures["reasons"]
    assert slow.applied >= 4
    _record("responses slower than the read timeout", patients, figures, started,
            read_timeout_s=1.0, delay_s=1.5, timed_out_requests=slow.applied,
            requests=len(proxy.seen))  # fmt: skip


def test_one_patient_always_too_slow_fails_with_reason(
    runtime: Runtime, proxy: FaultProxy, medplum: Medplum, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("service.work.runs.RUN_RETRY_DELAYS_S", (0.1,))
    runtime.client.timeout = (2.0, 0.5)  # type: ignore[union-attr]
    runtime.client.policy = RetryPolicy(retries=1, backoff_factor=0.1)  # type: ignore[union-attr]
    patients = medplum.patients[:8]
    victim = patients[3]
    proxy.add(Fault("delay", seconds=1.0, match=lambda r: _patient_in(r, victim)))
    _, figures = _run(runtime, patients, 60)
    assert list(figures["reasons"]) == [f"Patient/{victim}"]
    assert "read timeout" in figures["reasons"][f"Patient/{victim}"]
    harness.record(
        "fault: one patient's server answers always too slow",
        patients=len(patients), done=figures["done"], failed=figures["failed"],
        reason=figures["reasons"][f"Patient/{victim}"],
    )  # fmt: skip


def test_storm_of_429_with_retry_after(
    runtime: Runtime, proxy: FaultProxy, medplum: Medplum
) -> None:
    patients = medplum.patients[:16]
    storm = proxy.add(Fault("status", status=429, headers={"Retry-After": "1"}, every=2))
    started = time.monotonic()
    _, figures = _run(runtime, patients, 90)
    assert figures["failed"] == 0, figures["reasons"]
    _record("storm of 429 (every other request, Retry-After: 1)", patients, figures, started,
            answered_429=storm.applied, requests=len(proxy.seen))  # fmt: skip


def test_storm_of_503(runtime: Runtime, proxy: FaultProxy, medplum: Medplum) -> None:
    """Every request gets 503 for 4 s in the middle of the run (no Retry-After)."""
    patients = medplum.patients[:PATIENTS]
    proxy.add(Fault("delay", seconds=0.05))
    window: dict[str, float] = {"until": 0.0}
    storm = Fault("status", status=503, match=lambda _r: time.monotonic() < window["until"])
    proxy.faults.insert(0, storm)
    started = time.monotonic()
    run_id = _start(runtime, patients)
    harness.wait_until(lambda: runtime.store.run_progress(run_id)["done"] >= 4, 30, "4 done")
    window["until"] = time.monotonic() + 4
    harness.wait_run(runtime, run_id, 90)
    figures = harness.check_run(runtime, run_id, patients)
    assert figures["failed"] == 0, figures["reasons"]
    assert storm.applied >= 4
    _record("storm of 503 (every request for 4 s)", patients, figures, started,
            answered_503=storm.applied, requests=len(proxy.seen))  # fmt: skip


@pytest.mark.parametrize("keep", [0, 300], ids=["before-body", "mid-body"])
def test_connection_resets(
    runtime: Runtime, proxy: FaultProxy, medplum: Medplum, keep: int
) -> None:
    """Every third answer is cut by a TCP reset: after the headers (mid-body) or before them."""
    patients = medplum.patients[:PATIENTS]
    resets = proxy.add(Fault("reset", keep=keep if keep else -1, every=3))
    started = time.monotonic()
    _, figures = _run(runtime, patients, 90)
    assert figures["failed"] == 0, figures["reasons"]
    how = "mid-body" if keep else "before the answer"
    _record(f"connection reset ({how}, every 3rd)", patients, figures, started,
            resets=resets.applied, requests=len(proxy.seen))  # fmt: skip


def test_truncated_and_malformed_json(
    runtime: Runtime, proxy: FaultProxy, medplum: Medplum
) -> None:
    """One patient's answers are cut short (a Content-Length that matches the cut), another's are
    not JSON at all: those two fail with the reason, the others are screened."""
    patients = medplum.patients[:10]
    cut, garbled = patients[2], patients[5]
    proxy.add(Fault("truncate", keep=1000, match=lambda r: _patient_in(r, cut)))
    proxy.add(Fault("malformed", match=lambda r: _patient_in(r, garbled)))
    _, figures = _run(runtime, patients, 60)
    assert sorted(figures["reasons"]) == sorted([f"Patient/{cut}", f"Patient/{garbled}"])
    for reason in figures["reasons"].values():
        assert reason.startswith("the server's answer is not valid JSON"), reason
    harness.record(
        "fault: truncated and malformed JSON",
        patients=len(patients), done=figures["done"], failed=figures["failed"],
        reason=figures["reasons"][f"Patient/{cut}"],
    )  # fmt: skip


def _padded(payload: bytes, _request: Request, target_bytes: int = 50_000_000) -> bytes:
    """The batch answer with the patient's Observation Bundle padded with unrelated
    Observations until the whole answer is about `target_bytes`."""
    data = json.loads(payload)
    observations = next(
        e["resource"] for e in data["entry"]
        if e["resource"].get("resourceType") == "Bundle"
        and any(k["url"].split("/fhir/")[1].startswith("Observation") for k in e["resource"].get("link", []))
    )  # fmt: skip
    filler = {
        "resourceType": "Observation", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}]},
        "valueQuantity": {"value": 72, "unit": "/min"}, "note": [{"text": "x" * 800}],
    }  # fmt: skip
    size = len(json.dumps(filler)) + 40
    entries = observations.setdefault("entry", [])
    for i in range(target_bytes // size):
        entries.append({"resource": {**filler, "id": f"pad-{i}"}, "search": {"mode": "match"}})
    return json.dumps(data).encode()


def test_a_50_mb_bundle(runtime: Runtime, proxy: FaultProxy, medplum: Medplum) -> None:
    patient = "fx-base"
    big = proxy.add(
        Fault("transform", fn=_padded, match=lambda r: r.method == "POST" and _patient_in(r, patient))
    )  # fmt: skip
    before = harness.rss_kib(_pid())
    started = time.monotonic()
    run_id = _start(runtime, [patient, "fx-age-17"])
    harness.wait_run(runtime, run_id, 100)
    seconds = time.monotonic() - started
    figures = harness.check_run(runtime, run_id, [patient, "fx-age-17"])
    assert figures["failed"] == 0, figures["reasons"]
    assert big.applied == 1
    result = runtime.store.latest_result(f"Patient/{patient}", "NCT06585007")
    assert result is not None and result["status"] == _expected_status(patient)
    harness.record(
        "fault: a 50 MB Bundle",
        bundle_mb=50, screened=True, status=result["status"], seconds=round(seconds, 1),
        rss_growth_mb=round((harness.rss_kib(_pid()) - before) / 1024),
    )  # fmt: skip


def _pid() -> int:
    import os

    return os.getpid()


def _next_offset(request: Request) -> str:
    """A new `next` link every time: the same search with an ever larger _offset."""
    path = request.path
    base, _, offset = path.partition("&_offset=")
    step = int(offset.split("&")[0] or 0) + 1
    return f"http://{request.headers['host']}{base}&_offset={step}"


def test_paging_loops(runtime: Runtime, proxy: FaultProxy, medplum: Medplum) -> None:
    """Three servers that never stop paging: a `next` link to the page itself, a cycle of two
    pages, and an endless series of new links. The first two are cut at the repeat; the last
    is cut at the client's page limit and the patient fails with that reason."""
    runtime.client.max_pages = 40  # type: ignore[union-attr]
    repeat, cycle, endless = "fx-base", "fx-age-17", "fx-deceased-boolean"

    def same_page(payload: bytes, request: Request) -> bytes:
        return add_next_link(payload, lambda r: f"http://{r.headers['host']}/fhir/Condition?patient={repeat}&_count=100", request)  # fmt: skip

    def two_pages(payload: bytes, request: Request) -> bytes:
        other = "_offset=1" if "_offset=1" not in request.path else "_offset=2"
        return add_next_link(payload, lambda r: f"http://{r.headers['host']}/fhir/Condition?patient={cycle}&_count=100&{other}", request)  # fmt: skip

    def endless_pages(payload: bytes, request: Request) -> bytes:
        if request.method == "POST":
            return add_next_link(payload, lambda r: f"http://{r.headers['host']}/fhir/Condition?patient={endless}&_count=100&_offset=0", request)  # fmt: skip
        return add_next_link(payload, _next_offset, request)

    proxy.add(Fault("transform", fn=same_page, match=lambda r: _patient_in(r, repeat)))
    proxy.add(Fault("transform", fn=two_pages, match=lambda r: _patient_in(r, cycle)))
    endless_fault = proxy.add(
        Fault("transform", fn=endless_pages, match=lambda r: _patient_in(r, endless))
    )
    patients = [repeat, cycle, endless, "fx-age-year-only-met"]
    started = time.monotonic()
    _, figures = _run(runtime, patients, 60)
    assert list(figures["reasons"]) == [f"Patient/{endless}"], figures["reasons"]
    assert "paging did not end" in figures["reasons"][f"Patient/{endless}"]
    for patient in (repeat, cycle):
        result = runtime.store.latest_result(f"Patient/{patient}", "NCT06585007")
        assert result is not None and result["status"] == _expected_status(patient)
    harness.record(
        "fault: paging loops",
        repeated_link="cut at the repeat, screened", cycle="cut at the repeat, screened",
        endless="failed at the 40-page limit", endless_requests=endless_fault.applied,
        reason=figures["reasons"][f"Patient/{endless}"],
        run_seconds=round(time.monotonic() - started, 1),
    )  # fmt: skip


def _is_transaction(request: Request) -> bool:
    return request.method == "POST" and b'"type": "transaction"' in request.body


def test_rejected_transaction(proxy: FaultProxy, medplum: Medplum, sqlite_url: str) -> None:
    """The server refuses every write-back transaction (400 with an OperationOutcome): results
    are kept, the outbox records why, nothing reaches the server; once the server accepts
    again, every write lands exactly once. The outbox is drained by the test (no background
    worker), with a clock an hour ahead each time so that every retry is due."""
    runtime = Runtime(
        harness.settings_for(proxy.base_url + "/fhir", sqlite_url), start_workers=False
    )
    try:
        _rejected_transaction(runtime, proxy, medplum)
    finally:
        runtime.close()


def _rejected_transaction(runtime: Runtime, proxy: FaultProxy, medplum: Medplum) -> None:
    candidates = [p for p in medplum.patients if _expected_status(p) == "candidate"][:6]
    # a subject already on the server with the same content is rightly not rewritten, and there
    # would be no transaction to refuse: start these patients from nothing
    harness.forget_subjects(medplum.base_url, candidates)
    rejected = proxy.add(
        Fault(
            "status", status=400, match=_is_transaction,
            body=json.dumps({"resourceType": "OperationOutcome", "issue": [{"severity": "error",
                             "code": "business-rule", "diagnostics": "ResearchSubject rejected by site policy"}]}).encode(),
        )
    )  # fmt: skip
    before = harness.research_subjects(medplum.base_url)
    run_id, figures = _run(runtime, candidates, 60, write_back=True)
    assert figures["failed"] == 0
    future = datetime.now(UTC) + timedelta(hours=1)
    for _ in range(5):  # five refused attempts: a permanent refusal is then given up
        runtime.drain_outbox(now=future)
        future += timedelta(hours=1)
    counts = runtime.store.outbox_counts()
    assert counts["failed"] == len(candidates) and counts["done"] == 0, counts
    errors = _outbox_errors(runtime)
    assert all("ResearchSubject rejected by site policy" in e for e in errors), errors
    assert harness.research_subjects(medplum.base_url) == before
    writebacks = runtime.store.run_writebacks(run_id)
    assert writebacks["failed"] == len(candidates), writebacks
    assert "rejected by site policy" in (writebacks["last_error"] or "")
    # the server accepts again; a new run re-queues the patients and writes each once
    proxy.clear()
    again = _start(runtime, candidates, write_back=True)
    harness.wait_run(runtime, again, 60)
    assert runtime.drain_outbox() == len(candidates)
    assert runtime.store.run_writebacks(again)["done"] == len(candidates)
    after = harness.assert_no_duplicate_subjects(medplum.base_url)
    for patient in candidates:
        assert after[f"NCT06585007:{patient}"] == 1
    harness.record(
        "fault: rejected transaction",
        candidates=len(candidates), refused=rejected.applied, outbox_after_refusals=counts,
        run_writebacks=writebacks, written_after_recovery=len(candidates), duplicates=0,
    )  # fmt: skip


def _outbox_errors(runtime: Runtime) -> list[str]:
    from sqlalchemy import text

    with runtime.store.engine.connect() as connection:
        return [
            str(row[0])
            for row in connection.execute(text("SELECT last_error FROM writeback_outbox"))
        ]
