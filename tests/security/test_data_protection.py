"""What leaves the service, and where it goes: no patient data and no secrets in logs or error
bodies; TLS verification that cannot be silently turned off; the FHIR base URL only from the
configuration; no `next` link followed to another origin."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest
from urllib3.exceptions import InsecureRequestWarning

from service.api import create_app
from service.config import ConfigError, Settings, settings_from_env
from service.fhir.client import FhirClient
from service.fhir.errors import FhirNetworkError
from service.runtime import Runtime
from service.settings import fhir_auth_from_env
from tests.integration.helpers import cloned_fixture
from tests.reliability import harness
from tests.reliability.conftest import Medplum
from tests.reliability.faultproxy import Fault, FaultProxy, Request, rewrite_next_links
from tests.security.tlsserver import self_signed, serving

pytestmark = pytest.mark.timeout(120)

# A patient whose data is distinctive enough to find anywhere it leaks to.
SECRET_PATIENT = "sec-leak-probe"
NAME = ("Hieronymus", "Vandersteen-Quist")
BIRTH_DATE = "1951-07-23"
TESTOSTERONE = 17.3
FHIR_TOKEN = "fhir-bearer-S3CR3T-" + "q" * 16
API_TOKEN = harness.TOKEN


def _load_probe(medplum: Medplum) -> None:
    bundle = cloned_fixture("base", SECRET_PATIENT)
    for entry in bundle["entry"]:
        resource = entry["resource"]
        if resource["resourceType"] == "Patient":
            resource["name"] = [{"given": [NAME[0]], "family": NAME[1]}]
            resource["birthDate"] = BIRTH_DATE
        quantity = resource.get("valueQuantity")
        if (
            resource["resourceType"] == "Observation"
            and quantity
            and quantity.get("unit") == "ng/dL"
        ):
            quantity["value"] = TESTOSTERONE
    with FhirClient(medplum.base_url) as client:
        client.transaction(bundle)


def _leaks(text: str) -> list[str]:
    probes = [NAME[0], NAME[1], BIRTH_DATE, f"{TESTOSTERONE} ng/dL", f"{TESTOSTERONE}ng/dL",
              f'"value": {TESTOSTERONE}', FHIR_TOKEN, API_TOKEN]  # fmt: skip
    return [probe for probe in probes if probe in text]


def test_a_full_run_logs_no_patient_data_and_no_secret(
    medplum: Medplum, proxy: FaultProxy, sqlite_url: str, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    """Everything at DEBUG, in this process (run, write-back, API calls, an error, a CDS card),
    and the real service under gunicorn with its own logging: no name, birth date, observation
    value, FHIR token or API token in any log line."""
    _load_probe(medplum)
    patients = [SECRET_PATIENT, *medplum.patients[:10]]
    caplog.set_level(logging.DEBUG)
    env = {"MEDCARE_FHIR_AUTH": "bearer", "MEDCARE_FHIR_TOKEN": FHIR_TOKEN}
    settings = harness.settings_for(
        proxy.base_url + "/fhir", sqlite_url, fhir_auth=fhir_auth_from_env(env)
    )
    runtime = Runtime(settings)
    try:
        run_id = runtime.start_run("ids", patients, harness.AS_OF, True).id
        harness.wait_run(runtime, run_id, 60)
        harness.wait_until(lambda: runtime.store.outbox_counts()["pending"] == 0, 30, "outbox")
        client = create_app(settings, runtime).test_client()
        bodies = [
            client.post("/v1/screen", json={"patient": SECRET_PATIENT}, headers=harness.AUTH),
            client.get(f"/v1/runs/{run_id}/results", headers=harness.AUTH),
        ]
        proxy.add(Fault("status", status=500))  # an error on the way: its log lines too
        bodies.append(
            client.post("/v1/screen", json={"patient": SECRET_PATIENT}, headers=harness.AUTH)
        )
        assert bodies[-1].status_code == 502
        assert not _leaks(bodies[-1].get_data(as_text=True))
    finally:
        runtime.close()
    assert all(r["authorization"] == f"Bearer {FHIR_TOKEN}" for r in map(vars, proxy.seen))
    in_process = caplog.text
    assert len(caplog.records) > 50, "the run logged too little to prove anything"
    assert not _leaks(in_process), _leaks(in_process)
    # the real service, as deployed
    service_db = f"sqlite:///{tmp_path / 'svc.sqlite3'}"
    service = harness.ServiceProcess(
        harness.service_env(proxy.base_url + "/fhir", service_db, **env), tmp_path / "svc.log"
    )
    proxy.clear()
    with service:
        started = service.post("/v1/runs", {"patients": patients, "as_of": "2026-11-26"})
        run = started.json()
        harness.wait_until(
            lambda: service.get(f"/v1/runs/{run['id']}").json()["status"] == "done", 60, "run"
        )
        results = service.get(f"/v1/runs/{run['id']}/results").text
        assert NAME[1] not in results  # results carry ids and reasons, not names
        service.post("/v1/screen", {"patient": "no-such-patient"})
    service_log = service.log()
    assert "POST /v1/runs" in service_log  # the access log is there
    assert not _leaks(service_log), _leaks(service_log)
    harness.record(
        "security: a full run's logs",
        log_records_in_process=len(caplog.records), service_log_lines=len(service_log.splitlines()),
        probes="name, birth date, observation value, FHIR token, API token", found=0,
    )  # fmt: skip


def test_tls_verification_cannot_be_silently_turned_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    cert, key = self_signed(tmp_path)
    # production refuses the setting, wherever it comes from
    with pytest.raises(ConfigError, match="MEDCARE_TLS_VERIFY"):
        Settings(tls_verify=False, api_token_hashes=("x",)).check()
    env = {"MEDCARE_TLS_VERIFY": "false", "MEDCARE_API_TOKEN_SHA256": "ab" * 32}
    with pytest.raises(ConfigError, match="MEDCARE_TLS_VERIFY"):
        settings_from_env(env).check()
    serve = subprocess.run(
        [str(Path(sys.executable).with_name("medcare-screen")), "serve", "--port", "1"],
        env={"PATH": "/usr/bin:/bin", **env}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert serve.returncode != 0 and "MEDCARE_TLS_VERIFY" in serve.stderr, serve.stderr
    # the environment variables that loosen TLS for requests do not loosen it here
    for name, value in (
        ("CURL_CA_BUNDLE", ""),
        ("REQUESTS_CA_BUNDLE", ""),
        ("PYTHONHTTPSVERIFY", "0"),
    ):
        monkeypatch.setenv(name, value)
    with serving((cert, key)) as server:
        client = FhirClient(server.url + "/fhir", retries=3, sleep=lambda _s: None)
        with pytest.raises(FhirNetworkError, match="TLS verification failed") as refused:
            client.capabilities()
        assert client.request_count == 1, "a certificate error is not retried"
        assert not refused.value.temporary
        # the right CA bundle is the way to trust a private CA
        trusted = FhirClient(server.url + "/fhir", verify=str(cert))
        assert trusted.capabilities()["resourceType"] == "CapabilityStatement"
        # development mode may turn it off, and says so in the log
        with caplog.at_level(logging.WARNING), pytest.warns(InsecureRequestWarning):
            FhirClient(server.url + "/fhir", verify=False).capabilities()
        assert "TLS certificate verification is OFF" in caplog.text
        assert Settings(environment="development", tls_verify=False, allow_no_auth=True).check()
        # JWKS of an issuer behind a certificate we do not trust: no keys, no entry
        from service.api.security import JwksCache, Unauthorized

        with pytest.raises(Unauthorized, match="could not be fetched"):
            JwksCache(server.url + "/jwks.json").key("k")
    harness.record(
        "security: TLS verification",
        production_setting="refused (ConfigError, serve exits)", self_signed="refused, not retried",
        env_overrides_tried="CURL_CA_BUNDLE, REQUESTS_CA_BUNDLE, PYTHONHTTPSVERIFY: no effect",
        ca_bundle="accepted", development="allowed with a warning",
    )  # fmt: skip


def test_the_fhir_base_url_never_comes_from_a_request(
    medplum: Medplum, sqlite_url: str, tmp_path: Path
) -> None:
    from tests.integration.jwks import jwks_server

    with serving() as hostile, jwks_server() as ehr:
        audience = "https://medcare.example.org/cds-services/medcare-patient-view"
        settings = harness.settings_for(medplum.base_url, sqlite_url).with_overrides(
            cds_issuers=((ehr.issuer, ehr.jwks_url),), cds_audience=audience
        )
        runtime = Runtime(settings)
        try:
            client = create_app(settings, runtime).test_client()
            call = {
                "hook": "patient-view", "hookInstance": "h1",
                "fhirServer": hostile.url + "/fhir",
                "fhirAuthorization": {"access_token": "t", "token_type": "Bearer"},
                "context": {"patientId": "fx-base", "userId": "Practitioner/1"},
            }  # fmt: skip
            card = client.post("/cds-services/medcare-patient-view", json=call,
                               headers={"Authorization": f"Bearer {ehr.token(audience)}"})  # fmt: skip
            assert card.status_code == 200, card.get_json()
            refused = []
            for body in (
                {"patient": "fx-base", "fhir_base": hostile.url},
                {"patient": "fx-base", "fhirServer": hostile.url},
                {"patient": f"{hostile.url}/fhir/Patient/fx-base"},
            ):
                refused.append(
                    client.post("/v1/screen", json=body, headers=harness.AUTH).status_code
                )
            for search in (f"{hostile.url}/fhir/Patient", "//127.0.0.1/Patient", "Patient/../../x",
                           f"Observation?subject={hostile.url}"):  # fmt: skip
                response = client.post("/v1/runs", json={"search": search}, headers=harness.AUTH)
                refused.append(response.status_code)
            spoofed = client.post("/v1/screen", json={"patient": "fx-base"},
                                  headers={**harness.AUTH, "Host": hostile.url[7:],
                                           "X-Forwarded-Host": hostile.url[7:]})  # fmt: skip
            assert spoofed.status_code == 200
        finally:
            runtime.close()
        assert refused == [422] * 7, refused
        assert hostile.requests == [], hostile.requests
    harness.record(
        "security: FHIR base URL only from configuration",
        cds_fhirServer_ignored=True, hostile_requests=0, bodies_refused_422=len(refused),
    )  # fmt: skip


@pytest.mark.parametrize("where", ["other-port", "other-host", "https"])
def test_next_links_to_another_origin_are_refused(
    medplum: Medplum, proxy: FaultProxy, sqlite_url: str, where: str
) -> None:
    with serving() as hostile:
        port = hostile.url.rsplit(":", 1)[1]
        target = {
            "other-port": hostile.url,
            "other-host": f"http://127.0.0.2:{port}",
            "https": f"https://127.0.0.1:{proxy.port}",
        }[where]

        def foreign(payload: bytes, _request: Request) -> bytes:
            return rewrite_next_links(
                payload, lambda url: target + "/fhir/" + url.split("/fhir/", 1)[1]
            )

        def with_next(payload: bytes, request: Request) -> bytes:
            from tests.reliability.faultproxy import add_next_link

            return foreign(add_next_link(payload, lambda r: "http://x/fhir/Condition?patient=fx-base&_offset=9", request), request)  # fmt: skip

        proxy.add(Fault("transform", fn=with_next, match=lambda r: r.method == "POST"))
        env = {"MEDCARE_FHIR_AUTH": "bearer", "MEDCARE_FHIR_TOKEN": FHIR_TOKEN}
        settings = harness.settings_for(
            proxy.base_url + "/fhir", sqlite_url, fhir_auth=fhir_auth_from_env(env)
        )
        runtime = Runtime(settings)
        try:
            run_id = runtime.start_run("ids", ["fx-base"], harness.AS_OF, False).id
            harness.wait_run(runtime, run_id, 60)
            figures = harness.check_run(runtime, run_id, ["fx-base"])
        finally:
            runtime.close()
        reason = figures["reasons"]["Patient/fx-base"]
        assert reason.startswith("refused to follow a next link to "), reason
        assert FHIR_TOKEN not in reason
        assert hostile.requests == []
    harness.record(
        f"security: next link to another origin ({where})", hostile_requests=0, reason=reason
    )


def test_secrets_never_in_logs_or_error_bodies(
    medplum: Medplum, proxy: FaultProxy, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The FHIR token, the FHIR basic password, the API token and a database password, through
    errors of every kind: FHIR 401/403/500, a dropped connection, an unknown patient, a bad
    request, an unreachable database at start-up."""
    caplog.set_level(logging.DEBUG)
    password = "basic-PW-" + "z" * 12
    db_password = "db-PW-" + "y" * 12
    secrets = [FHIR_TOKEN, password, db_password, API_TOKEN]
    bodies: list[str] = []
    for env in ({"MEDCARE_FHIR_AUTH": "bearer", "MEDCARE_FHIR_TOKEN": FHIR_TOKEN},
                {"MEDCARE_FHIR_AUTH": "basic", "MEDCARE_FHIR_USERNAME": "u", "MEDCARE_FHIR_PASSWORD": password}):  # fmt: skip
        settings = harness.settings_for(
            proxy.base_url + "/fhir",
            f"sqlite:///{tmp_path / 'secrets.sqlite3'}",
            fhir_auth=fhir_auth_from_env(env),
        )
        runtime = Runtime(settings)
        try:
            assert runtime.client is not None
            runtime.client.policy = type(runtime.client.policy)(retries=0)
            client = create_app(settings, runtime).test_client()
            for fault in (Fault("status", status=401), Fault("status", status=403),
                          Fault("status", status=500), Fault("reset", keep=-1)):  # fmt: skip
                proxy.clear()
                proxy.add(fault)
                response = client.post(
                    "/v1/screen", json={"patient": "fx-base"}, headers=harness.AUTH
                )
                assert response.status_code >= 400
                bodies.append(response.get_data(as_text=True))
            proxy.clear()
            for call in (
                client.post("/v1/screen", json={"patient": "nobody-here"}, headers=harness.AUTH),
                client.get("/v1/changes?cursor=" + password, headers=harness.AUTH),
                client.get("/v1/runs/x", headers={"Authorization": f"Bearer {password}"}),
                client.get("/health/ready"),
                client.get("/metrics"),
            ):
                bodies.append(call.get_data(as_text=True))
            bodies.append(repr(runtime.client) + repr(settings))
        finally:
            runtime.close()
    for body in bodies:
        assert not [s for s in secrets if s in body], body
    # a database that cannot be reached at start-up: the error names it without its password
    start = subprocess.run(
        [str(Path(sys.executable).with_name("medcare-screen")), "serve", "--port", "1", "--dev"],
        env={"PATH": "/usr/bin:/bin", "MEDCARE_ALLOW_NO_AUTH": "true",
             "MEDCARE_DATABASE_URL": f"postgresql://medcare:{db_password}@127.0.0.1:1/medcare"},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert start.returncode != 0
    assert db_password not in start.stdout + start.stderr, start.stderr[-2000:]
    assert not [s for s in secrets if s in caplog.text]
    harness.record(
        "security: secrets in logs and error bodies",
        secrets=4,
        error_bodies_checked=len(bodies),
        log_records=len(caplog.records),
        found=0,
    )
