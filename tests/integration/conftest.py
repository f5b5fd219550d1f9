"""Integration fixtures: every test here runs against both real FHIR peers."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from service.fhir.client import FhirClient
from tests.conftest import FIXTURES, REPO
from tests.integration.peers import Peer, running

PEER_NAMES = ("hapi", "medplum")


@dataclass(frozen=True)
class LoadedPeer:
    """A running peer with every valid fixture patient loaded."""

    peer: Peer
    cases: tuple[str, ...]

    @property
    def base_url(self) -> str:
        return self.peer.base_url


@pytest.fixture(scope="session", params=PEER_NAMES)
def fhir_peer(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Peer]:
    """A real FHIR server on a free loopback port, started once per session per peer."""
    with running(request.param, tmp_path_factory.mktemp(f"peer-{request.param}")) as peer:
        yield peer


def load_profiles(client: FhirClient) -> list[str]:
    """PUT every StructureDefinition of profiles/ (extensions first, then the subject profile).

    On HAPI, every ResearchSubject written afterwards names the profile in meta.profile and is
    validated against it on write: a non-conforming one is refused with 422.
    """
    paths = sorted((REPO / "profiles").glob("StructureDefinition-*.json"))
    paths.sort(key=lambda path: path.stem.endswith("medcare-research-subject"))
    urls = []
    for path in paths:
        definition = json.loads(path.read_text())
        client.update(definition)
        urls.append(definition["url"])
    return urls


@pytest.fixture(scope="session")
def loaded_peer(fhir_peer: Peer) -> LoadedPeer:
    """The fixture patients loaded once per peer, one transaction each (as load-fixtures does).

    HAPI also gets our profiles (it validates what we write against them); Medplum's test peer
    does not validate profiles, so it gets none.
    """
    client = FhirClient(fhir_peer.base_url)
    if fhir_peer.name == "hapi":
        load_profiles(client)
    cases = []
    for path in sorted(FIXTURES.glob("*.json")):
        if path.name.endswith(".expected.json") or path.stem.startswith("invalid-"):
            continue
        client.transaction(json.loads(path.read_text()), patient=f"Patient/fx-{path.stem}")
        cases.append(path.stem)
    return LoadedPeer(fhir_peer, tuple(cases))
