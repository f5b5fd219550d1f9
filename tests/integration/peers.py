"""Start and stop the real FHIR servers of peers/ (HAPI FHIR JPA, Medplum) for the tests.

A peer that cannot be built or started fails the run with its log: it never skips
(a skipped integration suite is a failing one). Building, starting, waiting and stopping are
bench/servers.py's, shared with the benchmarks; the tests start each peer as its `run` does.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench.servers import build, free_port, started

PEERS_DIR = Path(__file__).resolve().parents[2] / "peers"


@dataclass(frozen=True)
class Peer:
    name: str
    base_url: str
    log_path: Path


@contextmanager
def running(name: str, log_dir: Path) -> Iterator[Peer]:
    """Build and start peer `name` as peers/NAME/run starts it, on a free loopback port."""
    build(name)
    port = free_port()
    log_path = log_dir / f"{name}.log"
    base_url = f"http://127.0.0.1:{port}/fhir"
    with started(name, [str(PEERS_DIR / name / "run"), str(port)], base_url, log_path):
        yield Peer(name, base_url, log_path)
