"""A total deadline for one HTTP exchange, the status line and headers included.

Timeouts in requests/urllib3 bound each socket read, so a server that sends one byte per second
is never late: not in its body (limits.py checks the deadline between reads) and not in its
status line and headers, which are read inside `session.request()` before our code sees any
answer. So the client's pools make connections that report their socket when they start to
wait for an answer, and a timer shuts that socket down when the exchange's deadline passes: the
blocked read returns at once, and `Watch.fired` tells the client why the connection "failed".

Only the socket of the exchange that armed the watch is shut down: a connection records the
watch of its current exchange, so a connection back in the pool and reused by another request
(a token request, another thread) is left alone.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

_current = threading.local()  # the watch of the exchange running in this thread, if any


class Watch:
    """One exchange's deadline: `fired` once it passed while the exchange was still running."""

    def __init__(self, seconds: float) -> None:
        self.fired = False
        self._lock = threading.Lock()
        self._connection: Any = None
        self._done = False
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True
        self._timer.start()

    def arm(self, connection: Any) -> None:
        """The exchange now waits for an answer on `connection` (called in its thread)."""
        with self._lock:
            self._connection = connection
            late = self.fired and not self._done
        if late:
            _shut(connection)

    def close(self) -> None:
        with self._lock:
            self._done = True
        self._timer.cancel()

    def _fire(self) -> None:
        with self._lock:
            if self._done:
                return
            self.fired = True
            connection = self._connection
            mine = connection is not None and getattr(connection, "_deadline_watch", None) is self
        if mine:
            _shut(connection)


@contextmanager
def watching(seconds: float) -> Iterator[Watch]:
    """A Watch for the exchange run in this thread inside the block."""
    watch = Watch(seconds)
    _current.watch = watch
    try:
        yield watch
    finally:
        _current.watch = None
        watch.close()


def install(adapter: HTTPAdapter) -> None:
    """Make `adapter`'s pools use connections that report to the current watch."""
    adapter.poolmanager.pool_classes_by_scheme = {
        "http": _WatchedHTTPConnectionPool,
        "https": _WatchedHTTPSConnectionPool,
    }


def _shut(connection: Any) -> None:
    sock = getattr(connection, "sock", None)
    if sock is None:
        return
    # the plain socket's shutdown, also for TLS: the reader's SSL object stays intact
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _Watched:
    """Mixin: the connection records the watch of the exchange that waits on it."""

    def getresponse(self, *args: Any, **kwargs: Any) -> Any:
        watch = getattr(_current, "watch", None)
        self._deadline_watch = watch
        if watch is not None:
            watch.arm(self)
        return super().getresponse(*args, **kwargs)  # type: ignore[misc]


class _WatchedHTTPConnection(_Watched, HTTPConnection):
    pass


class _WatchedHTTPSConnection(_Watched, HTTPSConnection):
    pass


class _WatchedHTTPConnectionPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSConnectionPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection
