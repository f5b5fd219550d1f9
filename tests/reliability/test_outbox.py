"""The write-back outbox: a write the server refuses for now is kept and written later, once;
writing one patient now leaves the other patients' queued write-backs due (it used to lease
every due entry for 5 minutes)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from service.fhir.client import RetryPolicy
from service.runtime import Runtime
from tests.conftest import FIXTURES
from tests.reliability import harness
from tests.reliability.conftest import Medplum
from tests.reliability.faultproxy import Fault, FaultProxy, Request

pytestmark = pytest.mark.timeout(60)


def _candidates(medplum: Medplum, n: int, skip: int = 0) -> list[str]:
    found = [
        p for p in medplum.patients
        if json.loads((FIXTURES / f"{p[3:]}.expected.json").read_text())["status"] == "candidate"
    ]  # fmt: skip
    return found[skip : skip + n]


def _entries(runtime: Runtime) -> dict[str, tuple[str, int, datetime]]:
    with runtime.store.engine.connect() as connection:
        rows = connection.execute(
            text("SELECT patient_id, state, attempts, next_attempt_at FROM writeback_outbox")
        )
        return {str(p): (str(s), int(a), datetime.fromisoformat(str(n))) for p, s, a, n in rows}


def _is_write_path(request: Request) -> bool:
    return "ResearchS" in request.path or b'"transaction"' in request.body


def test_queued_write_backs_are_written_later_and_not_held_back(
    proxy: FaultProxy, medplum: Medplum, sqlite_url: str
) -> None:
    runtime = Runtime(
        harness.settings_for(proxy.base_url + "/fhir", sqlite_url, today=harness.AS_OF),
        start_workers=False,
    )
    try:
        assert runtime.client is not None
        runtime.client.policy = RetryPolicy(retries=0)
        first, second, third = _candidates(medplum, 3, skip=40)
        harness.forget_subjects(medplum.base_url, [first, second, third])  # first writes, all
        busy = proxy.add(Fault("status", status=503, match=_is_write_path))
        outcomes = [
            runtime.screen_patient(p, harness.AS_OF, True).write_back for p in (first, second)
        ]
        assert outcomes == ["queued", "queued"] and busy.applied >= 2
        proxy.clear()
        assert runtime.screen_patient(third, harness.AS_OF, True).write_back == "written"
        entries = _entries(runtime)
        soon = datetime.now(UTC) + timedelta(minutes=1)
        for patient in (first, second):
            state, attempts, due = entries[f"Patient/{patient}"]
            assert state == "pending" and attempts == 1, entries
            assert due.replace(tzinfo=due.tzinfo or UTC) < soon, "held back by another write"
        assert entries[f"Patient/{third}"][0] == "done"
        written = runtime.drain_outbox(now=datetime.now(UTC) + timedelta(seconds=10))
        assert written == 2
    finally:
        runtime.close()
    subjects = harness.assert_no_duplicate_subjects(medplum.base_url)
    for patient in (first, second, third):
        assert subjects[f"NCT06585007:{patient}"] == 1
    harness.record(
        "fault: write-back while the server answers 503, then later",
        queued=2, written_later=written, written_at_once=1, duplicates=0,
    )  # fmt: skip
