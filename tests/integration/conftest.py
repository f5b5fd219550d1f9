"""Integration fixtures: every test here runs against both real FHIR peers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.peers import Peer, running

PEER_NAMES = ("hapi", "medplum")


@pytest.fixture(scope="session", params=PEER_NAMES)
def fhir_peer(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Peer]:
    """A real FHIR server on a free loopback port, started once per session per peer."""
    with running(request.param, tmp_path_factory.mktemp(f"peer-{request.param}")) as peer:
        yield peer
