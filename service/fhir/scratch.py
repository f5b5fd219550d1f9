"""Scratch folders for NDJSON buckets: private, named by their process, never left behind.

Pass 1 of an NDJSON screen writes the kept raw lines (names, birth dates: patient data) into
bucket files under $TMPDIR. They must not outlive the screen:

- the folder is created 0700 by `mkdtemp` and named `medcare-ndjson-<pid>-<random>`;
- it is removed when the screen ends, also by an exception, and on SIGTERM and SIGINT (a handler
  removes this process's folders, then lets the signal do what it did before: KeyboardInterrupt,
  the default exit, or the previous handler);
- SIGKILL cannot be caught: the next screen removes the folders of processes that are gone
  (same prefix, a pid that no longer runs, a folder this user owns) before making its own.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)

PREFIX = "medcare-ndjson-"
SIGNALS = (signal.SIGTERM, signal.SIGINT)

_lock = threading.Lock()
_live: dict[Path, int] = {}  # folder -> pid of the process that made it
_previous: dict[int, Any] = {}  # signal -> the handler before ours (installed once)


@contextmanager
def scratch_folder(parent: Path | None = None) -> Iterator[Path]:
    """A new private folder under `parent` (default $TMPDIR) for the block; removed after it,
    on SIGTERM/SIGINT too. Stale folders of dead processes are removed first."""
    where = Path(parent) if parent is not None else Path(tempfile.gettempdir())
    remove_stale(where)
    folder = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-", dir=where))
    with _lock:
        _live[folder] = os.getpid()
    _install_handlers()
    try:
        yield folder
    finally:
        with _lock:
            _live.pop(folder, None)
        shutil.rmtree(folder, ignore_errors=True)


def remove_stale(parent: Path) -> int:
    """Remove `medcare-ndjson-<pid>-*` folders of processes that no longer run; how many."""
    removed = 0
    try:
        candidates = list(parent.glob(f"{PREFIX}*-*"))
    except OSError:
        return 0
    for folder in candidates:
        pid_text = folder.name.removeprefix(PREFIX).split("-", 1)[0]
        if not pid_text.isdigit() or not folder.is_dir() or folder.is_symlink():
            continue
        try:
            if folder.stat().st_uid != os.getuid():
                continue  # another user's: not ours to judge
        except OSError:
            continue
        if _alive(int(pid_text)):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed += 1
        log.warning("removed the scratch folder %s of a process that is gone", folder.name)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed process its parent has not reaped yet still answers kill(0)
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[:1]
    except OSError:
        return True
    return state != ["Z"]


def _install_handlers() -> None:
    """Our SIGTERM/SIGINT handler, once per process; only the main thread may set handlers
    (a screen started in another thread relies on the stale-folder clean-up instead)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in SIGNALS:
        current = signal.getsignal(sig)
        if current is _on_signal:
            continue
        _previous[sig] = current
        signal.signal(sig, _on_signal)


def _remove_own() -> None:
    with _lock:
        mine = [folder for folder, pid in _live.items() if pid == os.getpid()]
        for folder in mine:
            _live.pop(folder, None)
    for folder in mine:  # a forked worker never removes its parent's folders
        shutil.rmtree(folder, ignore_errors=True)


def _on_signal(signum: int, frame: FrameType | None) -> None:
    _remove_own()
    previous = _previous.get(signum, signal.SIG_DFL)
    if callable(previous):
        previous(signum, frame)  # e.g. KeyboardInterrupt for SIGINT, or the caller's handler
        return
    if previous == signal.SIG_IGN:
        return
    signal.signal(signum, signal.SIG_DFL)  # die of the signal, as without us
    os.kill(os.getpid(), signum)
