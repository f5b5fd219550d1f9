"""Start the project's FHIR test peers (peers/hapi, peers/medplum) for a benchmark run.

The same peers as the integration tests (tests/integration/peers.py), built by their own
`build` scripts, with differences that matter for a benchmark: HAPI gets a heap sized for a
population (see `command`), Medplum's transaction limits are lifted (a patient is one
transaction of ~600 PUTs, Medplum's default allows 50 updates) and its request log is off
(writing a line per request would be measured too). Loopback only.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import requests

PEERS_DIR = Path(__file__).resolve().parents[1] / "peers"
START_TIMEOUT_S = {"hapi": 300.0, "medplum": 60.0}
HAPI_HEAP = os.environ.get("MEDCARE_BENCH_HAPI_HEAP", "4g")
PEER_ENV = {
    "medplum": {"MEDPLUM_PEER_TX_LIMITS": "off", "MEDPLUM_PEER_QUIET": "1"},
    "hapi": {},
}


class PeerUnavailable(RuntimeError):
    """The peer could not be built or started; the message carries the end of its log."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def build(name: str) -> None:
    script = PEERS_DIR / name / "build"
    if not script.exists():
        raise PeerUnavailable(f"peers/{name}/build does not exist (yet)")
    result = subprocess.run(
        [str(script)], capture_output=True, text=True, timeout=1800, check=False
    )
    if result.returncode != 0:
        raise PeerUnavailable(
            f"peers/{name}/build failed ({result.returncode}):\n{result.stderr[-4000:]}"
        )


def command(name: str, port: int, hapi_heap: str = HAPI_HEAP) -> list[str]:
    """The command that starts peer `name`.

    Medplum: its own `run`. HAPI: the same jar as `peers/hapi/run` starts, with a bigger heap
    and the JVM's default JIT. The peer's `run` is tuned for the test suite (1 GB heap, C1
    JIT only); with a benchmark population of ~40,000 resources that heap fills up (H2 keeps
    the database in it) and HAPI spends nearly all its time in full GCs (measured: 278 full
    collections, 400 s of GC during one load), which would measure the collector, not FHIR.
    A hospital's HAPI runs with several GB and the full JIT.
    """
    if name != "hapi":
        return [str(PEERS_DIR / name / "run"), str(port)]
    fast = PEERS_DIR / "hapi" / "target" / "fast" / "hapi-peer.jar"
    jar = PEERS_DIR / "hapi" / "target" / "hapi-peer.jar"
    chosen = fast if fast.exists() and fast.stat().st_mtime >= jar.stat().st_mtime else jar
    return [
        "java",
        f"-Xmx{hapi_heap}",
        "-XX:+UseSerialGC",
        "-Dfile.encoding=UTF-8",
        "-jar",
        str(chosen),
        str(port),
    ]


@contextmanager
def running(name: str, log_dir: Path) -> Iterator[str]:
    """Build and start peer `name` on a free loopback port; yields its FHIR base URL."""
    build(name)
    port = free_port()
    base_url = f"http://127.0.0.1:{port}/fhir"
    log_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **PEER_ENV[name]}
    with started(name, command(name, port), base_url, log_dir / f"{name}.log", env):
        yield base_url


@contextmanager
def started(
    name: str,
    argv: list[str],
    base_url: str,
    log_path: Path,
    env: dict[str, str] | None = None,
) -> Iterator[None]:
    """Run `argv` (peer `name`) in its own session, its output in `log_path`, until it answers
    `base_url`/metadata; stopped on the way out. The benchmarks and the integration tests
    (tests/integration/peers.py) start their peers through here."""
    with log_path.open("w") as log:
        process = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env
        )
    try:
        _wait_ready(name, process, base_url, log_path)
        yield
    finally:
        stop(process)


def _wait_ready(name: str, process: subprocess.Popen[bytes], base_url: str, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S[name]
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise PeerUnavailable(f"{name} exited ({process.returncode}):\n{_tail(log)}")
        with suppress(requests.RequestException):
            if requests.get(f"{base_url}/metadata", timeout=5).status_code == 200:
                return
        time.sleep(0.5)
    stop(process)
    raise PeerUnavailable(
        f"{name} did not answer /metadata in {START_TIMEOUT_S[name]:.0f} s:\n{_tail(log)}"
    )


def _tail(log: Path) -> str:
    return log.read_text()[-4000:]


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the peer's own process group (it was started in a new session), then KILL."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def server_rss_mb(base_url: str) -> float | None:
    """Resident memory of the process listening on the base URL's port (Linux /proc), in MB."""
    pid = server_pid(base_url)
    if pid is None:
        return None
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return None


def server_pid(base_url: str) -> int | None:
    """The process listening on the base URL's port (Linux /proc)."""
    port = int(base_url.split(":")[2].split("/")[0])
    inode = _listening_inode(port)
    if inode is None:
        return None
    for pid_dir in Path("/proc").iterdir():
        if not pid_dir.name.isdigit():
            continue
        with suppress(OSError):
            for fd in (pid_dir / "fd").iterdir():
                if os.readlink(fd) == f"socket:[{inode}]":
                    return int(pid_dir.name)
    return None


def _listening_inode(port: int) -> str | None:
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if int(fields[1].split(":")[1], 16) == port and fields[3] == "0A":
                    return fields[9]
    return None
