#!/usr/bin/env python3
"""Smoke check of the HAPI peer: the server behaviours the MEDCARE Screen tests rely on.

Usage: python3 peers/hapi/smoke.py                              (starts ./run 0, checks, stops it)
       python3 peers/hapi/smoke.py http://127.0.0.1:PORT/fhir   (checks a running peer)

Standard library only. Every id and identifier carries a random tag, so it can run against
a server that already holds data. Prints one line per check and exits 1 if any failed.
"""

from __future__ import annotations

import json
import re
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

FHIR_JSON = "application/fhir+json"
SYS = "https://medcare-screen.org/fhir/smoke"
EXT = "https://medcare-screen.org/fhir/StructureDefinition/screening-result"
SCREENING_CS = "https://medcare-screen.org/fhir/CodeSystem/screening"

Response = tuple[int, dict[str, str], Any]
# (arrival time.monotonic(), method, path, headers, body) of a request to the Receiver
Delivery = tuple[float, str, str, dict[str, str], bytes]


class Smoke:
    def __init__(self, base: str) -> None:
        self.base = base.rstrip("/")
        self.failed = 0
        self.passed = 0

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        url = path if path.startswith("http") else f"{self.base}/{path}"
        data = json.dumps(body).encode() if body is not None else None
        hdrs = {"Accept": FHIR_JSON, **(headers or {})}
        if data is not None:
            hdrs["Content-Type"] = FHIR_JSON
        req = urllib.request.Request(url, data=data, method=method, headers=hdrs)
        try:
            with urllib.request.urlopen(req, timeout=120) as resp:
                status, raw, rh = resp.status, resp.read(), dict(resp.headers)
        except urllib.error.HTTPError as err:
            status, raw, rh = err.code, err.read(), dict(err.headers)
        return status, rh, json.loads(raw) if raw else None

    def check(self, name: str, ok: bool, detail: str = "") -> None:
        if ok:
            self.passed += 1
        else:
            self.failed += 1
        print(f"{'ok  ' if ok else 'FAIL'} {name}{'  -- ' + detail if detail else ''}")

    def refuses(
        self, name: str, answer: Response, statuses: tuple[int, ...] = (400, 422), also: bool = True
    ) -> None:
        """Check that the server refused a request with one of `statuses` (and that `also`
        holds), quoting its first error."""
        st, _, body = answer
        self.check(name, st in statuses and also, f"{st} {errors(body)[:1]}")


def statuses(bundle: Any) -> list[str]:
    return [e.get("response", {}).get("status", "") for e in (bundle or {}).get("entry", [])]


def ids(bundle: Any, mode: str = "match") -> list[str]:
    return [
        e["resource"]["id"]
        for e in (bundle or {}).get("entry", [])
        if e.get("search", {}).get("mode", "match") == mode
    ]


def errors(outcome: Any) -> list[str]:
    return [
        f"{i.get('expression', ['?'])[0]}: {i.get('diagnostics', '')}"
        for i in (outcome or {}).get("issue", [])
        if i.get("severity") in ("error", "fatal")
    ]


def obs(patient_ref: str, code: str, system: str = "http://loinc.org") -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": system, "code": code}]},
        "subject": {"reference": patient_ref},
    }


def run(s: Smoke) -> None:
    tag = uuid.uuid4().hex[:8]
    nocache = {"Cache-Control": "no-cache"}  # HAPI reuses cached search results for 60 s

    # --- metadata
    st, _, cs = s.call("GET", "metadata")
    system_ops = [i["code"] for i in cs["rest"][0].get("interaction", [])] if st == 200 else []
    s.check(
        "GET metadata",
        st == 200 and cs["resourceType"] == "CapabilityStatement",
        f"{st} fhirVersion={cs.get('fhirVersion')} system={system_ops}",
    )
    s.check(
        "metadata declares transaction and batch",
        "transaction" in system_ops and "batch" in system_ops,
        str(system_ops),
    )

    # --- client-assigned id, read, vread, history
    pid = f"fx-{tag}"
    pat: dict[str, Any] = {
        "resourceType": "Patient",
        "id": pid,
        "name": [{"family": "Smoke"}],
        "identifier": [{"system": SYS, "value": pid}],
        "extension": [{"url": EXT, "valueString": "unknown extension, must be accepted"}],
    }
    st, h, body = s.call("PUT", f"Patient/{pid}", pat)
    s.check(
        "PUT Patient/fx-* creates with client id",
        st == 201 and body["id"] == pid,
        f"{st} ETag={h.get('ETag')} versionId={body.get('meta', {}).get('versionId')}",
    )
    pat["name"][0]["family"] = "Smoke2"
    st, h, body = s.call("PUT", f"Patient/{pid}", pat)
    s.check(
        "PUT again updates (version 2)",
        st == 200 and body["meta"]["versionId"] == "2",
        f"{st} ETag={h.get('ETag')}",
    )
    st, _, body = s.call("GET", f"Patient/{pid}")
    s.check("read", st == 200 and body["name"][0]["family"] == "Smoke2", str(st))
    st, _, body = s.call("GET", f"Patient/{pid}/_history/1")
    s.check("vread _history/1", st == 200 and body["name"][0]["family"] == "Smoke", str(st))
    st, _, body = s.call("GET", f"Patient/{pid}/_history")
    s.check(
        "instance _history",
        st == 200 and body.get("type") == "history" and len(body.get("entry", [])) == 2,
        f"{st} entries={len(body.get('entry', []))}",
    )
    answer = s.call("PUT", "Patient/12345", {**pat, "id": "12345"})
    s.refuses("numeric client id refused (ALPHANUMERIC strategy)", answer, (400, 412))

    # --- validation on write
    pref = f"Patient/{pid}"
    st, h, body = s.call("POST", "Observation", obs(pref, "2986-8"))
    s.check("valid LOINC Observation accepted", st == 201, f"{st} Location={h.get('Location')}")
    st, _, body = s.call(
        "POST", "Observation", obs(pref, "HBA1C-LOCAL", "https://lab.example.org/codes")
    )
    s.check("code from unknown local code system accepted", st == 201, str(st))
    study = {
        "resourceType": "ResearchStudy",
        "status": "active",
        "identifier": [{"system": SYS, "value": f"study-{tag}"}],
    }
    st, _, body = s.call("POST", "ResearchStudy", study)
    study_ref = f"ResearchStudy/{body['id']}"
    subj = {
        "resourceType": "ResearchSubject",
        "status": "bogus",
        "study": {"reference": study_ref},
        "individual": {"reference": pref},
    }
    answer = s.call("POST", "ResearchSubject", subj)
    outcome = (answer[2] or {}).get("resourceType") == "OperationOutcome"
    s.refuses("ResearchSubject status 'bogus' rejected", answer, also=outcome)
    subj_ok = {
        **subj,
        "status": "candidate",
        "extension": [
            {
                "url": EXT,
                "valueCodeableConcept": {"coding": [{"system": SCREENING_CS, "code": "eligible"}]},
            }
        ],
    }
    st, _, body = s.call("POST", "ResearchSubject", subj_ok)
    s.check(
        "unknown extension + custom CodeSystem code accepted", st == 201, f"{st} {errors(body)[:1]}"
    )
    answer = s.call("POST", "Observation", obs("Patient/missing-" + tag, "2986-8"))
    s.refuses("reference to a missing resource is an error", answer, (400, 404, 422))

    # --- searches
    s.call("POST", "Observation", obs(pref, "14913-8"))
    st, _, body = s.call(
        "GET", f"Observation?code=http://loinc.org|2986-8,http://loinc.org|14913-8&patient={pref}"
    )
    s.check(
        "token OR search code=loinc|2986-8,loinc|14913-8",
        st == 200 and len(ids(body)) == 2,
        f"{st} total={body.get('total')} matches={len(ids(body))}",
    )
    st, _, body = s.call("GET", f"Observation?patient={pref}", headers=nocache)
    s.check(
        "search patient=Patient/x",
        st == 200 and len(ids(body)) == 3,
        f"{st} matches={len(ids(body))}",
    )

    st, _, med = s.call(
        "POST",
        "Medication",
        {
            "resourceType": "Medication",
            "code": {
                "coding": [
                    {"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "860975"}
                ]
            },
        },
    )
    s.call(
        "POST",
        "MedicationRequest",
        {
            "resourceType": "MedicationRequest",
            "status": "active",
            "intent": "order",
            "subject": {"reference": pref},
            "medicationReference": {"reference": f"Medication/{med['id']}"},
        },
    )
    st, _, body = s.call(
        "GET", f"MedicationRequest?patient={pref}&_include=MedicationRequest:medication"
    )
    s.check(
        "_include=MedicationRequest:medication",
        st == 200 and len(ids(body)) == 1 and ids(body, "include") == [med["id"]],
        f"{st} match={ids(body)} include={ids(body, 'include')}",
    )

    for i in range(5):
        s.call("POST", "Observation", obs(pref, f"{i}-{tag}", "https://lab.example.org/codes"))
    url: str | None = f"Observation?patient={pref}&_count=3"
    seen: list[str] = []
    pages = 0
    next_links: list[str] = []
    while url and pages < 10:
        st, _, body = s.call("GET", url, headers=nocache)
        pages += 1
        seen += ids(body)
        nxt = [link["url"] for link in body.get("link", []) if link["relation"] == "next"]
        url = nxt[0] if nxt else None
        next_links += nxt
    s.check(
        "_count=3 + next links page through all 8",
        len(seen) == 8 and len(set(seen)) == 8,
        f"pages={pages} seen={len(seen)} next={next_links[:1]}",
    )

    s.call(
        "POST",
        "Condition",
        {
            "resourceType": "Condition",
            "subject": {"reference": pref},
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": "44054006"}]},
        },
    )
    st, _, body = s.call(
        "GET", f"Patient?_has:Condition:patient:code=http://snomed.info/sct|44054006&_id={pid}"
    )
    s.check(
        "Patient?_has:Condition:patient:code=...",
        st == 200 and ids(body) == [pid],
        f"{st} {ids(body)}",
    )

    grp = {
        "resourceType": "Group",
        "type": "person",
        "actual": True,
        "member": [{"entity": {"reference": pref}}],
    }
    st, _, body = s.call("PUT", f"Group/grp-{tag}", {**grp, "id": f"grp-{tag}"})
    st, _, body = s.call("GET", f"Group/grp-{tag}")
    s.check("Group read", st == 200 and len(body.get("member", [])) == 1, str(st))

    # --- batch of GETs
    batch = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"request": {"method": "GET", "url": f"Patient/{pid}"}},
            {"request": {"method": "GET", "url": f"Observation?patient={pref}&_count=2"}},
            {"request": {"method": "GET", "url": f"Patient/nope-{tag}"}},
        ],
    }
    st, _, body = s.call("POST", "", batch)
    s.check(
        "batch with GET entries",
        st == 200
        and body.get("type") == "batch-response"
        and statuses(body)[:2] == ["200 OK", "200 OK"]
        and statuses(body)[2].startswith("404"),
        f"{st} {statuses(body)}",
    )

    # --- transaction: urn:uuid refs, conditional create, conditional update
    def txn(rs_status: str) -> dict[str, Any]:
        p_uuid, s_uuid = f"urn:uuid:{uuid.uuid4()}", f"urn:uuid:{uuid.uuid4()}"
        return {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [
                {
                    "fullUrl": p_uuid,
                    "resource": {
                        "resourceType": "Patient",
                        "identifier": [{"system": SYS, "value": f"tx-{tag}"}],
                    },
                    "request": {
                        "method": "POST",
                        "url": "Patient",
                        "ifNoneExist": f"identifier={SYS}|tx-{tag}",
                    },
                },
                {
                    "fullUrl": s_uuid,
                    "resource": {**study, "identifier": [{"system": SYS, "value": f"txs-{tag}"}]},
                    "request": {
                        "method": "PUT",
                        "url": f"ResearchStudy?identifier={SYS}|txs-{tag}",
                    },
                },
                # the validator wants a fullUrl on entries with a resource (see README)
                {
                    "fullUrl": f"urn:uuid:{uuid.uuid4()}",
                    "resource": {
                        "resourceType": "ResearchSubject",
                        "status": rs_status,
                        "identifier": [{"system": SYS, "value": f"rs-{tag}"}],
                        "study": {"reference": s_uuid},
                        "individual": {"reference": p_uuid},
                    },
                    "request": {
                        "method": "PUT",
                        "url": f"ResearchSubject?identifier={SYS}|rs-{tag}",
                    },
                },
                {
                    "fullUrl": f"urn:uuid:{uuid.uuid4()}",
                    "resource": obs(p_uuid, "2986-8"),
                    "request": {"method": "POST", "url": "Observation"},
                },
            ],
        }

    st, _, body = s.call("POST", "", txn("candidate"))
    s.check(
        "transaction (urn:uuid, ifNoneExist, conditional PUT)",
        st == 200 and statuses(body) == ["201 Created"] * 4,
        f"{st} {statuses(body)}",
    )
    st, _, body = s.call("POST", "", txn("on-study"))
    s.check(
        "same transaction again: conditional create matches, conditional update updates",
        st == 200 and statuses(body) == ["200 OK", "200 OK", "200 OK", "201 Created"],
        f"{st} {statuses(body)} locations={[e['response'].get('location') for e in body.get('entry', [])][:3]}",
    )
    st, _, body = s.call("GET", f"ResearchSubject?identifier={SYS}|rs-{tag}", headers=nocache)
    rs = body["entry"][0]["resource"] if body.get("entry") else {}
    s.check(
        "urn:uuid references rewritten",
        len(ids(body)) == 1
        and rs["individual"]["reference"].startswith("Patient/")
        and rs["meta"]["versionId"] == "2"
        and rs["status"] == "on-study",
        f"individual={rs.get('individual')} versionId={rs.get('meta', {}).get('versionId')}",
    )

    # --- rollback of a failed transaction
    # valid for the validator; the second entry fails in the database (HAPI-1094, missing target)
    bad = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": f"urn:uuid:{uuid.uuid4()}",
                "resource": {
                    "resourceType": "Patient",
                    "identifier": [{"system": SYS, "value": f"rb-{tag}"}],
                },
                "request": {"method": "POST", "url": "Patient"},
            },
            {
                "fullUrl": f"urn:uuid:{uuid.uuid4()}",
                "resource": obs(f"Patient/missing-{tag}", "2986-8"),
                "request": {"method": "POST", "url": "Observation"},
            },
        ],
    }
    st, _, body = s.call("POST", "", bad)
    _, _, found = s.call("GET", f"Patient?identifier={SYS}|rb-{tag}", headers=nocache)
    s.check(
        "failed transaction rolls back entirely",
        st >= 400 and len(ids(found)) == 0,
        f"{st} {errors(body)[:1]} then search -> {len(ids(found))} patients",
    )
    bad_valid = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": {
                    "resourceType": "Patient",
                    "identifier": [{"system": SYS, "value": f"rv-{tag}"}],
                },
                "request": {"method": "POST", "url": "Patient"},
            },
            {"resource": subj, "request": {"method": "POST", "url": "ResearchSubject"}},
        ],
    }
    answer = s.call("POST", "", bad_valid)
    _, _, found = s.call("GET", f"Patient?identifier={SYS}|rv-{tag}", headers=nocache)
    s.refuses(
        "invalid entry inside a transaction rejected by the validator",
        answer,
        also=len(ids(found)) == 0,
    )
    answer = s.call("POST", "", {**bad_valid, "type": "batch"})
    s.refuses("invalid entry inside a batch rejected by the validator (whole request)", answer)


class Receiver:
    """A loopback HTTP server that records every request: the rest-hook endpoint."""

    def __init__(self) -> None:
        self.got: list[Delivery] = []
        self._cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def _record(self) -> None:
                size = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(size) if size else b""
                with receiver._cond:
                    entry = (time.monotonic(), self.command, self.path, dict(self.headers), body)
                    receiver.got.append(entry)
                    receiver._cond.notify_all()
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_POST = do_PUT = do_DELETE = _record

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def wait(self, found: Callable[[Delivery], bool], timeout: float = 30.0) -> Delivery | None:
        """The first request so far or within `timeout` s for which `found` holds."""
        end = time.monotonic() + timeout
        with self._cond:
            while True:
                hit = next((entry for entry in self.got if found(entry)), None)
                if hit is not None or time.monotonic() >= end:
                    return hit
                self._cond.wait(end - time.monotonic())

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def subscriptions(s: Smoke) -> None:
    """R4 rest-hook Subscriptions: activated, matched by code, delivered with the channel's
    header, with the resource (payload application/fhir+json) or empty (no payload)."""
    tag = uuid.uuid4().hex[:8]
    secret = uuid.uuid4().hex
    receiver = Receiver()
    pid = f"sub-{tag}"
    s.call("PUT", f"Patient/{pid}", {"resourceType": "Patient", "id": pid})
    sub_ids = {"full": f"smoke-full-{tag}", "idonly": f"smoke-idonly-{tag}"}
    try:
        for kind, sub_id in sub_ids.items():
            channel = {
                "type": "rest-hook",
                "endpoint": f"{receiver.url}/hook/{kind}",
                "header": [f"Authorization: Bearer {secret}"],
                **({"payload": FHIR_JSON} if kind == "full" else {}),
            }
            sub = {
                "resourceType": "Subscription",
                "id": sub_id,
                "status": "requested",
                "reason": "smoke",
                "criteria": "Observation?code=http://loinc.org|2986-8",
                "channel": channel,
            }
            st, _, body = s.call("PUT", f"Subscription/{sub_id}", sub)
            s.check(f"Subscription ({kind}) created", st == 201, f"{st} {errors(body)[:1]}")
        t0, status = time.monotonic(), [""]
        while time.monotonic() - t0 < 60 and set(status) != {"active"}:
            time.sleep(0.2)
            status = [s.call("GET", f"Subscription/{i}")[2].get("status") for i in sub_ids.values()]
        s.check(
            "Subscriptions activated (requested -> active)",
            set(status) == {"active"},
            f"{status} after {time.monotonic() - t0:.1f} s",
        )
        # HAPI may also deliver changes made before the Subscription existed (see README):
        # look for these two Observations by id
        _, _, other = s.call("POST", "Observation", obs(f"Patient/{pid}", "14913-8"))
        st, _, created = s.call("POST", "Observation", obs(f"Patient/{pid}", "2986-8"))
        oid = created.get("id") if st == 201 else None
        full = receiver.wait(lambda d: d[2] == f"/hook/full/Observation/{oid}")
        s.check(
            "payload application/fhir+json: PUT endpoint/Observation/<id> with the resource",
            full is not None
            and full[1] == "PUT"
            and json.loads(full[4]).get("id") == oid
            and full[3].get("Authorization") == f"Bearer {secret}",
            f"{full[1:3] if full else 'nothing delivered'}",
        )
        bare = receiver.wait(lambda d: d[2] == "/hook/idonly")
        s.check(
            "no payload: empty POST to the endpoint, with the header, naming no resource",
            bare is not None
            and bare[1] == "POST"
            and bare[4] == b""
            and bare[3].get("Authorization") == f"Bearer {secret}",
            f"{bare[1:3] if bare else 'nothing delivered'}",
        )
        s.check(
            "an Observation with another code is not delivered",
            all(d[2] != f"/hook/full/Observation/{other.get('id')}" for d in receiver.got),
            f"{sorted({d[2] for d in receiver.got})}",
        )
        latencies = []
        for _ in range(20):
            start = time.monotonic()
            st, _, created = s.call("POST", "Observation", obs(f"Patient/{pid}", "2986-8"))
            path = f"/hook/full/Observation/{created.get('id')}"
            hit = receiver.wait(lambda d, path=path: d[2] == path)
            latencies.append(hit[0] - start if hit else float("inf"))
        s.check(
            "20 deliveries, write to arrival",
            max(latencies) < 30,
            f"p50 {statistics.median(latencies) * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms",
        )
    finally:
        for sub_id in sub_ids.values():
            s.call("DELETE", f"Subscription/{sub_id}")
        receiver.close()


def start_peer() -> tuple[subprocess.Popen[str], str]:
    """Start ./run 0 and wait for its "HAPI peer ready on URL" line."""
    run_script = Path(__file__).resolve().parent / "run"
    proc = subprocess.Popen([str(run_script), "0"], stdout=subprocess.PIPE, text=True)
    t0 = time.monotonic()
    assert proc.stdout is not None
    for line in proc.stdout:  # ends when the process exits
        found = re.search(r"ready on (http://\S+/fhir)", line)
        if found:
            print(f"started {found.group(1)} in {time.monotonic() - t0:.1f} s")
            return proc, found.group(1)
    raise SystemExit(f"{run_script} exited with {proc.wait()} before it was ready")


def main() -> int:
    if len(sys.argv) > 2 or (len(sys.argv) == 2 and not sys.argv[1].startswith("http")):
        print(__doc__)
        return 2
    proc = None
    if len(sys.argv) == 2:
        base = sys.argv[1]
    else:
        proc, base = start_peer()
    try:
        smoke = Smoke(base)
        run(smoke)
        subscriptions(smoke)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=60)
    print(f"smoke: {smoke.passed} passed, {smoke.failed} failed")
    return 1 if smoke.failed else 0


if __name__ == "__main__":
    sys.exit(main())
