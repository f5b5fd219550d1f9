"""A throwaway PostgreSQL server for the store's integration tests.

`running_postgres()` runs initdb into a fresh temporary folder, starts the server on a free
loopback port (its socket in the same folder, nothing in /var/run), waits until it accepts
connections, creates the `medcare` database and yields its SQLAlchemy URL; afterwards it
stops the server and removes the folder. fsync is off: the data is thrown away anyway.

PostgreSQL refuses to run as root, so as root the server runs as the `postgres` OS user
(`runuser`), which must own the folder. Missing server binaries fail the tests with the
command that installs them: never a skip (a skipped integration suite is a failing one).
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import psycopg

DATABASE = "medcare"
SUPERUSER = "postgres"
START_TIMEOUT_S = 60.0
DEBIAN_ROOT = Path("/usr/lib/postgresql")
INSTALL_HINT = "PostgreSQL server binaries not found: apt-get install -y postgresql"


class PostgresFailed(RuntimeError):
    pass


@dataclass(frozen=True)
class PostgresServer:
    url: str
    port: int
    data_dir: Path
    log_path: Path
    startup_seconds: float


def find_bin_dir(root: Path = DEBIAN_ROOT) -> Path:
    """The newest PostgreSQL whose initdb and pg_ctl exist (MEDCARE_PG_BIN overrides).

    Debian keeps the server binaries off PATH, under /usr/lib/postgresql/VERSION/bin.
    """
    override = os.environ.get("MEDCARE_PG_BIN")
    candidates = [Path(override)] if override else []
    versions = root.glob("*/bin")
    candidates += sorted(versions, key=lambda p: _version(p.parent.name), reverse=True)
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).parent)
    for candidate in candidates:
        if (candidate / "initdb").is_file() and (candidate / "pg_ctl").is_file():
            return candidate
    raise PostgresFailed(INSTALL_HINT)


def _version(name: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in name.split("."))
    except ValueError:
        return (0,)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _as_server_user(argv: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return argv
    return ["runuser", "-u", SUPERUSER, "--", *argv]


def _run(argv: list[str], what: str, timeout: float = 120.0) -> None:
    result = subprocess.run(
        _as_server_user(argv), capture_output=True, text=True, timeout=timeout, check=False
    )
    if result.returncode != 0:
        raise PostgresFailed(
            f"{what} failed ({result.returncode}):\n{result.stdout[-2000:]}{result.stderr[-2000:]}"
        )


@contextmanager
def running_postgres(start_attempts: int = 3) -> Iterator[PostgresServer]:
    bin_dir = find_bin_dir()
    started = time.monotonic()
    # Not pytest's tmp_path: its parents are private to root and postgres could not enter them.
    base = Path(tempfile.mkdtemp(prefix="medcare-pg-"))
    data_dir, log_path = base / "data", base / "server.log"
    if os.geteuid() == 0:
        try:
            user = pwd.getpwnam(SUPERUSER)
        except KeyError as error:
            raise PostgresFailed(
                f"no {SUPERUSER} OS user to run the server: {INSTALL_HINT}"
            ) from error
        os.chown(base, user.pw_uid, user.pw_gid)
    pg_ctl = str(bin_dir / "pg_ctl")
    running = False
    try:
        _run(
            [
                str(bin_dir / "initdb"),
                "-D",
                str(data_dir),
                "-U",
                SUPERUSER,
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-locale",
                "--no-sync",
            ],
            "initdb",
        )
        port = _start(pg_ctl, data_dir, base, log_path, start_attempts)
        running = True
        url = f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{port}/{DATABASE}"
        _create_database(port)
        yield PostgresServer(url, port, data_dir, log_path, time.monotonic() - started)
    finally:
        if running:
            with suppress(PostgresFailed, subprocess.TimeoutExpired):
                _run([pg_ctl, "-D", str(data_dir), "-m", "fast", "-w", "stop"], "pg_ctl stop", 60)
        shutil.rmtree(base, ignore_errors=True)


def _start(pg_ctl: str, data_dir: Path, socket_dir: Path, log_path: Path, attempts: int) -> int:
    """Start on a free port; a port taken between choosing and binding gets another try."""
    failure = ""
    for _ in range(attempts):
        port = free_port()
        options = (
            f"-p {port} -k {socket_dir} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        command = [pg_ctl, "-D", str(data_dir), "-l", str(log_path), "-o", options]
        try:
            _run([*command, "-w", "-t", str(int(START_TIMEOUT_S)), "start"], "pg_ctl start")
        except PostgresFailed as error:
            log = log_path.read_text(errors="replace")[-3000:] if log_path.exists() else ""
            failure = f"{error}\n{log}"
            continue
        _wait_accepting(port)
        return port
    raise PostgresFailed(f"PostgreSQL did not start:\n{failure}")


def _wait_accepting(port: int) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            with psycopg.connect(
                host="127.0.0.1", port=port, user=SUPERUSER, dbname="postgres", connect_timeout=2
            ):
                return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _create_database(port: int) -> None:
    with psycopg.connect(
        host="127.0.0.1", port=port, user=SUPERUSER, dbname="postgres", autocommit=True
    ) as connection:
        connection.execute(f"CREATE DATABASE {DATABASE}")
