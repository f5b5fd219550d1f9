"""Start and stop the real FHIR servers of peers/ (HAPI FHIR JPA, Medplum) for the tests.

A peer that cannot be built or started fails the run with its log: it never skips
(a skipped integration suite is a failing one).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import requests

PEERS_DIR = Path(__file__).resolve().parents[2] / "peers"
START_TIMEOUT_S = {"hapi": 300.0, "medplum": 60.0}


class PeerFailed(RuntimeError):
    pass


@dataclass(frozen=True)
class Peer:
    name: str
    base_url: str
    log_path: Path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def build(name: str) -> None:
    """Run peers/NAME/build (idempotent and fast once built)."""
    result = subprocess.run(
        [str(PEERS_DIR / name / "build")], capture_output=True, text=True, timeout=1800, check=False
    )
    if result.returncode != 0:
        raise PeerFailed(
            f"peers/{name}/build failed ({result.returncode}):\n{result.stderr[-4000:]}"
        )


@contextmanager
def running(name: str, log_dir: Path) -> Iterator[Peer]:
    build(name)
    port = free_port()
    log_path = log_dir / f"{name}.log"
    base_url = f"http://127.0.0.1:{port}/fhir"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [str(PEERS_DIR / name / "run"), str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait_ready(name, process, base_url, log_path)
        yield Peer(name, base_url, log_path)
    finally:
        _stop(process)


def _wait_ready(name: str, process: subprocess.Popen[bytes], base_url: str, log_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S[name]
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise PeerFailed(
                f"{name} exited with {process.returncode}:\n{log_path.read_text()[-4000:]}"
            )
        try:
            response = requests.get(f"{base_url}/metadata", timeout=5)
            if response.status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    _stop(process)
    raise PeerFailed(
        f"{name} did not answer /metadata in {START_TIMEOUT_S[name]:.0f} s:\n{log_path.read_text()[-4000:]}"
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
