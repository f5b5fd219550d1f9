"""Patient data at rest (issue 10 item 12): the SQLite database and its WAL/SHM files are
private to the service's user, and the NDJSON scratch buckets (raw lines with names) never
outlive the screen: removed when it ends, on SIGTERM and SIGINT, and, after a SIGKILL, at the
next start."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import cast

import pytest

from service.fhir import scratch
from service.fhir.ndjson_stream import NdjsonStream
from service.fhir.record import PatientRecord
from service.store import create_store
from tests.conftest import FIXTURES
from tests.ndjson_export import bundles_to_ndjson
from tests.unit.store.helpers import AS_OF, body, save

pytestmark = pytest.mark.timeout(120)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def loose_umask() -> Iterator[None]:
    """The usual umask (022): the store must not rely on the process's umask."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


@pytest.mark.usefixtures("loose_umask")
def test_a_new_sqlite_database_and_its_wal_and_shm_are_private(tmp_path: Path) -> None:
    database = tmp_path / "new" / "deeper" / "results.sqlite3"
    store = create_store(f"sqlite:///{database}", today=AS_OF)
    try:
        store.migrate()
        save(store, None, body("p1"))
        with store.engine.connect() as connection:  # a reader keeps the WAL and SHM open
            connection.exec_driver_sql("SELECT count(*) FROM results").scalar()
            files = [database, Path(f"{database}-wal"), Path(f"{database}-shm")]
            assert [(f.name, _mode(f)) for f in files] == [(f.name, 0o600) for f in files]
    finally:
        store.close()
    assert _mode(database.parent) == 0o700 and _mode(database.parent.parent) == 0o700


@pytest.mark.usefixtures("loose_umask")
def test_an_existing_world_readable_database_is_narrowed(tmp_path: Path) -> None:
    database = tmp_path / "old.sqlite3"
    store = create_store(f"sqlite:///{database}", today=AS_OF)
    store.migrate()
    save(store, None, body("p1"))
    store.close()
    for file in (database, Path(f"{database}-wal")):
        file.touch()
        file.chmod(0o644)  # as every database made before this fix
    store = create_store(f"sqlite:///{database}", today=AS_OF)
    try:
        assert store.latest_result("p1", "NCT06585007") == body("p1")
        assert _mode(database) == 0o600
        assert _mode(Path(f"{database}-wal")) == 0o600
    finally:
        store.close()


# -- NDJSON scratch buckets ------------------------------------------------------------------


def _export(tmp_path: Path) -> Path:
    bundles = sorted(p for p in FIXTURES.glob("*.json") if not p.name.endswith(".expected.json"))
    return bundles_to_ndjson(bundles, tmp_path / "export")


def _buckets_of(scratch_root: Path, pid: int) -> list[Path]:
    return list(scratch_root.glob(f"medcare-ndjson-{pid}-*"))


def _screen_in_background(tmp_path: Path, scratch_root: Path) -> subprocess.Popen[bytes]:
    """`medcare-screen screen` of an NDJSON export, with its stdout not read: once the pipe is
    full it waits, in the middle of its buckets, until it is signalled."""
    script = Path(sys.executable).with_name("medcare-screen")
    return subprocess.Popen(
        [str(script), "screen", "--source", str(_export(tmp_path)), "--as-of", "2026-11-26",
         "--format", "json", "--no-store"],
        env={**os.environ, "TMPDIR": str(scratch_root), "MEDCARE_TODAY": "2026-11-26"},
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def _wait_for_buckets(process: subprocess.Popen[bytes], scratch_root: Path) -> Path:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, "the screen ended before its buckets were seen"
        found = [f for f in _buckets_of(scratch_root, process.pid) if any(f.glob("bucket-*"))]
        if found:
            return found[0]
        time.sleep(0.05)
    raise AssertionError("no bucket folder appeared")


@pytest.mark.parametrize(
    ("sig", "status"), [(signal.SIGTERM, -signal.SIGTERM), (signal.SIGINT, 130)]
)
def test_a_signalled_screen_removes_its_buckets(
    tmp_path: Path, sig: signal.Signals, status: int
) -> None:
    scratch_root = tmp_path / "tmp"
    scratch_root.mkdir()
    process = _screen_in_background(tmp_path, scratch_root)
    try:
        folder = _wait_for_buckets(process, scratch_root)
        assert _mode(folder) == 0o700
        process.send_signal(sig)
        assert process.wait(timeout=60) == status
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        assert process.stdout is not None
        process.stdout.close()
    assert not folder.exists()
    assert list(scratch_root.iterdir()) == []


def test_buckets_of_a_killed_screen_are_removed_at_the_next_start(tmp_path: Path) -> None:
    scratch_root = tmp_path / "tmp"
    scratch_root.mkdir()
    process = _screen_in_background(tmp_path, scratch_root)
    try:
        folder = _wait_for_buckets(process, scratch_root)
        process.kill()  # SIGKILL: nothing can run, the buckets stay
        process.wait(timeout=30)
    finally:
        assert process.stdout is not None
        process.stdout.close()
    assert folder.exists()
    # a live process's folder (this test's sleeping child) is left alone
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = scratch_root / f"medcare-ndjson-{sleeper.pid}-abcd"
        live.mkdir()
        stream = NdjsonStream(_export(tmp_path / "again"), scratch_dir=scratch_root)
        assert sum(1 for _ in stream.records()) > 100  # the next screen
        assert not folder.exists()
        assert live.exists()
    finally:
        sleeper.kill()
        sleeper.wait()
    assert scratch.remove_stale(scratch_root) == 1  # now that its process is gone
    assert list(scratch_root.iterdir()) == []


def test_a_screen_that_ends_or_fails_leaves_no_bucket(tmp_path: Path) -> None:
    scratch_root = tmp_path / "tmp"
    scratch_root.mkdir()
    stream = NdjsonStream(_export(tmp_path), scratch_dir=scratch_root)
    records = cast(Generator[PatientRecord, None, None], stream.records())
    next(records)
    assert len(_buckets_of(scratch_root, os.getpid())) == 1
    with pytest.raises(RuntimeError):
        records.throw(RuntimeError("a bug in the caller"))
    assert list(scratch_root.iterdir()) == []
    assert sum(1 for _ in stream.records()) > 100
    assert list(scratch_root.iterdir()) == []
