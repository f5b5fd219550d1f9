"""Issue 10 item 14: MEDCARE_FHIR_BATCH=auto probes, on a stock HAPI server.

Stock HAPI accepts `batch` but its CapabilityStatement lists only `transaction`; asking the
statement alone cost 7 requests per patient instead of 1, silently. The HAPI peer serves its
statement unchanged with HAPI_PEER_STOCK_METADATA=1 (peers/hapi/README.md); a fault proxy in
front of it plays a server that refuses batch.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack

import pytest

from service.cli import main
from service.fhir.client import FhirClient
from service.fhir.server_source import ServerSource
from service.mapping import Mappings
from tests.conftest import FIXTURES
from tests.integration.peers import running
from tests.reliability.faultproxy import Fault, FaultProxy, Request

CASES = ("base", "age-17", "deceased-boolean")
PATIENTS = tuple(f"fx-{case}" for case in CASES)


@pytest.fixture(scope="module")
def stock_hapi(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The HAPI peer with HAPI's own CapabilityStatement (no `batch` line), three patients."""
    with ExitStack() as stack:
        with pytest.MonkeyPatch.context() as env:  # only the peer's start sees the variable
            env.setenv("HAPI_PEER_STOCK_METADATA", "1")
            peer = stack.enter_context(running("hapi", tmp_path_factory.mktemp("hapi-stock")))
        with FhirClient(peer.base_url) as client:
            for case in CASES:
                bundle = json.loads((FIXTURES / f"{case}.json").read_text())
                client.transaction(bundle, patient=f"Patient/fx-{case}")
        yield peer.base_url


def _ids(source: ServerSource, patient_id: str) -> list[str]:
    record = source.record(patient_id)
    found = [r for resources in record.resources.values() for r in resources]
    found += [*record.medications.values(), *([record.patient] if record.patient else [])]
    return sorted({f"{r['resourceType']}/{r['id']}" for r in found})


def test_auto_keeps_batch_on_stock_hapi_which_does_not_declare_it(
    stock_hapi: str, mappings: Mappings
) -> None:
    client = FhirClient(stock_hapi)
    assert not client.declares_batch()  # the stock statement, as public HAPI servers publish it
    source = ServerSource(client, mappings)
    first = source.record(PATIENTS[0])
    assert first.patient is not None and first.patient["id"] == PATIENTS[0]
    assert client.batch_mode == "batch"
    assert client.batch_mode_reason == (
        "auto: the server answered the first batch properly "
        "(its CapabilityStatement does not declare batch)"
    )
    before = client.request_count
    for patient_id in PATIENTS:
        source.record(patient_id)
    assert client.request_count - before == len(PATIENTS)  # one batch each, not seven requests


def _is_batch(request: Request) -> bool:
    return request.method == "POST" and request.path.rstrip("/") == "/fhir"


def test_auto_falls_back_to_concurrent_searches_when_batch_is_refused(
    stock_hapi: str, mappings: Mappings
) -> None:
    expected = {pid: _ids(ServerSource(FhirClient(stock_hapi), mappings), pid) for pid in PATIENTS}
    with FaultProxy(stock_hapi.removesuffix("/fhir")) as proxy:
        proxy.add(Fault("status", match=_is_batch, status=405))
        client = FhirClient(proxy.base_url + "/fhir")
        source = ServerSource(client, mappings)
        read = {pid: _ids(source, pid) for pid in PATIENTS}
        posts = [seen for seen in proxy.seen if seen.method == "POST"]
    assert read == expected  # the first patient too: its searches were made one by one
    assert client.batch_mode == "concurrent searches"
    assert client.batch_mode_reason.startswith("auto: the server refused the first batch (")
    assert "injected 405" in client.batch_mode_reason
    assert len(posts) == 1  # probed once, never again


def test_the_cli_says_which_mode_a_run_used(
    stock_hapi: str, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["screen", "--fhir-base", stock_hapi, "--patient", PATIENTS[0], "--no-store"])
    err = capsys.readouterr().err
    assert (
        "medcare-screen: FHIR reads: batch (auto: the server answered the first batch properly "
        "(its CapabilityStatement does not declare batch))"
    ) in err
