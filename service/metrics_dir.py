"""gunicorn's metrics directory: every worker's counters in files that a scrape adds up.

Why a module without prometheus_client: prometheus_client chooses, when first imported, between
in-memory values and the multiprocess files, by whether PROMETHEUS_MULTIPROC_DIR is set. So
`serve` calls `prepare()` in the gunicorn master before anything imports prometheus_client;
the workers it forks then all write to the directory, and /metrics in any of them reads every
worker's files (service/api/metrics.py). The directory is emptied at start (counts of a
previous run would add to this one's), and `worker_exit` tells prometheus_client that a
worker is gone (its live gauges drop out; its counters keep counting in the totals).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

ENV = "PROMETHEUS_MULTIPROC_DIR"


def prepare(directory: str | None = None) -> Path:
    """Set PROMETHEUS_MULTIPROC_DIR (kept when already set, else a fresh temporary directory)
    and empty it: call once in the gunicorn master, before the workers start."""
    chosen = Path(directory or os.environ.get(ENV) or tempfile.mkdtemp(prefix="medcare-metrics-"))
    if chosen.exists():
        for entry in chosen.iterdir():
            if entry.is_file() and entry.suffix == ".db":  # prometheus_client's files only
                entry.unlink()
    chosen.mkdir(parents=True, exist_ok=True)
    os.environ[ENV] = str(chosen)
    return chosen


def worker_exit(pid: int) -> None:
    """A gunicorn worker ended: its live gauges no longer count."""
    if os.environ.get(ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
