"""Issue 10 items 6 and 8 in a run: the real Runtime, the Medplum peer behind the hostile server.

One run, six patients: four get a hostile answer to their batch (a gzip bomb, a drip, JSON
nested 900 levels, an error quoting our bearer token), two are served normally. The run ends,
the two are screened, each of the four fails with its reason stored, and no stored reason
carries the token.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from service.runtime import Runtime
from tests.reliability import harness
from tests.reliability.conftest import Medplum
from tests.reliability.faultproxy import GZIP, Fault, FaultProxy, Request, deeply_nested, gzip_bomb

pytestmark = pytest.mark.timeout(120)

TOKEN = "run-bearer-token-0123456789"
BOMB, DRIP, DEEP, ECHO = "fx-base", "fx-age-17", "fx-deceased-boolean", "fx-age-year-only-met"
CLEAN = ["fx-age-18th-birthday-on-as-of", "fx-deceased-date"]


def _batch_of(patient: str) -> Callable[[Request], bool]:
    def match(request: Request) -> bool:
        return request.method == "POST" and f'Patient/{patient}"' in request.text

    return match


@pytest.fixture
def runtime(proxy: FaultProxy, sqlite_url: str) -> Iterator[Runtime]:
    rt = harness.make_runtime(
        proxy.base_url + "/fhir",
        sqlite_url,
        fhir_batch="always",  # each patient's batch carries its fault (no auto probe here)
        fhir_deadline_s=2.0,
        fhir_auth={"kind": "bearer", "token": TOKEN},
    )
    yield rt
    rt.close()


def test_hostile_answers_fail_their_patients_with_reasons_and_the_run_goes_on(
    runtime: Runtime, proxy: FaultProxy, medplum: Medplum
) -> None:
    patients = [BOMB, DRIP, DEEP, ECHO, *CLEAN]
    assert set(patients) <= set(medplum.patients)
    proxy.add(Fault("body", match=_batch_of(BOMB), body=gzip_bomb(540_000_000), headers=GZIP))
    proxy.add(Fault("drip", match=_batch_of(DRIP), seconds=0.05, body=b"{" + b" " * 400 + b"}"))
    proxy.add(Fault("body", match=_batch_of(DEEP), body=deeply_nested(900)))
    proxy.add(Fault("echo", match=_batch_of(ECHO), status=400))
    started = time.monotonic()
    run_id = runtime.start_run("ids", patients, harness.AS_OF, False).id
    harness.wait_run(runtime, run_id, 100)
    figures = harness.check_run(runtime, run_id, patients)
    reasons = figures["reasons"]
    assert sorted(reasons) == sorted(f"Patient/{p}" for p in (BOMB, DRIP, DEEP, ECHO)), reasons
    assert "larger than 52,428,800 bytes" in reasons[f"Patient/{BOMB}"]
    assert "not complete after 2 s" in reasons[f"Patient/{DRIP}"]
    assert "nested deeper than 100 levels" in reasons[f"Patient/{DEEP}"]
    assert "Authorization: Bearer ***" in reasons[f"Patient/{ECHO}"]
    assert all(TOKEN not in reason for reason in reasons.values())
    assert any(seen.authorization == f"Bearer {TOKEN}" for seen in proxy.seen)
    harness.record(
        "hostile: gzip bomb, drip, deep nesting, token echo in one run",
        patients=len(patients),
        done=figures["done"],
        failed=figures["failed"],
        reasons={k.removeprefix("Patient/"): v[:90] for k, v in reasons.items()},
        run_seconds=round(time.monotonic() - started, 1),
    )
