"""Who holds a claim: owner ids of service processes, and telling a dead owner from a live one.

A claimed patient of a run names its owner, `<host>/<pid>/<token>`, and a lease end that the
owner's heartbeat keeps moving (Store.renew_claims). Another process takes the patient only
when the lease has run out, or at once when the owner is known to be dead: same host, and no
process with that pid any more (a restarted gunicorn worker, a killed `serve`). An owner on
another host, or one whose pid is alive, is never judged dead here: its lease decides. The
token keeps two Stores of one process apart (tests run two "processes" in one).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from uuid import uuid4

# models.OWNER_LENGTH is 64: host (at most 40) + "/" + pid + "/" + 12 hex digits
_HOST_CHARS = 40


def this_host() -> str:
    return socket.gethostname()[:_HOST_CHARS] or "localhost"


def new_owner_id() -> str:
    """A fresh owner id for this process: `<host>/<pid>/<random token>`."""
    return f"{this_host()}/{os.getpid()}/{uuid4().hex[:12]}"


def owner_is_dead(owner: str) -> bool:
    """True only when `owner` ran on this host and its process is gone."""
    host, _, rest = owner.partition("/")
    pid_text, _, _token = rest.partition("/")
    if host != this_host() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return False  # this process: alive (another Store of it, or this one)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # a process of another user has that pid now: alive, as far as we know
    return _zombie(pid)


def _zombie(pid: int) -> bool:
    """A killed process its parent has not reaped yet still answers kill(0) (Linux /proc)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] == ["Z"]
