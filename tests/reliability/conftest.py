"""Fixtures of the fault tests: a real Medplum peer with the fixture patients, a fault proxy in
front of it, a fresh SQLite database per test; the figures printed at the end of the session."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from service.fhir.client import FhirClient
from tests.conftest import FIXTURES
from tests.integration.peers import running
from tests.reliability import harness
from tests.reliability.faultproxy import FaultProxy


@dataclass(frozen=True)
class Medplum:
    base_url: str  # http://127.0.0.1:PORT/fhir, asked directly (no faults)
    cases: tuple[str, ...]

    @property
    def patients(self) -> list[str]:
        return [f"fx-{case}" for case in self.cases]


def load_fixture_patients(base_url: str) -> tuple[str, ...]:
    """Every valid fixture patient, one transaction each (as `load-fixtures` does)."""
    cases = []
    with FhirClient(base_url) as client:
        for path in sorted(FIXTURES.glob("*.json")):
            if path.name.endswith(".expected.json") or path.stem.startswith("invalid-"):
                continue
            client.transaction(json.loads(path.read_text()), patient=f"Patient/fx-{path.stem}")
            cases.append(path.stem)
    return tuple(cases)


@pytest.fixture(scope="session")
def medplum(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Medplum]:
    with running("medplum", tmp_path_factory.mktemp("medplum")) as peer:
        yield Medplum(peer.base_url, load_fixture_patients(peer.base_url))


@pytest.fixture
def proxy(medplum: Medplum) -> Iterator[FaultProxy]:
    with FaultProxy(medplum.base_url.removesuffix("/fhir")) as fault_proxy:
        yield fault_proxy


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'reliability.sqlite3'}"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    harness.print_figures(terminalreporter.write_line)
