"""A fault-injecting HTTP proxy on loopback, in front of a real FHIR server (the Medplum peer).

    with FaultProxy(upstream="http://127.0.0.1:8103") as proxy:
        base = proxy.base_url + "/fhir"          # point the service here
        proxy.add(Fault("status", status=503, times=10))
        proxy.down(); proxy.up()                 # refuse connections, then accept again

Every request is forwarded to the upstream server unchanged (the Host header too, so the
server's absolute `next` links point back at the proxy) unless a fault matches it. Faults are
checked in the order they were added; the first that matches and is due (`every`, `times`,
`after`) decides what the client gets:

- `delay`: forward, but wait `seconds` before answering (a timeout when longer than the client's);
- `status`: answer `status` with `headers` and `body` (an OperationOutcome by default), without
  asking the server (429 with Retry-After, 503...);
- `reset`: forward, send the status line, the headers and `keep` bytes of the body, then reset
  the connection (RST, not a clean close);
- `truncate`: forward and send only `keep` bytes of the body, with a Content-Length that says so
  (a cut the client cannot see from the framing: only the JSON is broken);
- `malformed`: answer 200 with a body that is not JSON;
- `body`: answer `status` with the fixed `body` (a 50 MB Bundle...);
- `transform`: forward and pass the server's body through `fn` (rewrite `next` links...).

The hostile server of issue 10 (a careless or malicious FHIR server, on real HTTP):

- `redirect`: answer `status` (307 by default when `status` is left at 200) with a Location of
  `location`, in which `{path}` is replaced by the request's path (`http://other/{path}`);
- `drip`: forward (or take `body`), send the headers at once and then the body one byte every
  `seconds`: each read is quick, the answer never ends in useful time; `drip-head` drips the
  status line and headers too (the client is still waiting for its `requests` call);
- `echo`: answer `status` with an OperationOutcome that quotes the request's Authorization
  header, as some servers and proxies quote the request they refuse.

Helpers build the bodies of the others: `gzip_bomb()` (a small gzip body that inflates to
hundreds of MB, with Content-Encoding gzip via `GZIP`), `deeply_nested()` (a Bundle nested N
levels). With `upstream=None` it is a standalone server: whatever no fault answers gets a 502.

`down()` closes the listening socket and every open connection: the server is gone and new
connections are refused, as when the FHIR server is stopped. `up()` listens on the same port
again. Everything runs in threads of this process; it binds 127.0.0.1 (or another loopback
address given as `host`, e.g. 127.0.0.2 to be "another origin") only.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import struct
import sys
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer",
     "upgrade", "content-length"}
)  # fmt: skip
UPSTREAM_TIMEOUT_S = 120.0
GZIP = {"Content-Encoding": "gzip"}


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


def _outcome(text: str) -> bytes:
    return json.dumps(
        {
            "resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": "transient", "diagnostics": text}],
        }
    ).encode()


@dataclass
class Fault:
    kind: str
    match: Callable[[Request], bool] | None = None
    every: int = 1  # act on every n-th matching request
    times: int | None = None  # at most this many times
    after: int = 0  # let this many matching requests through first
    seconds: float = 0.0
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None
    keep: int = 0
    fn: Callable[[bytes, Request], bytes] | None = None
    location: str = ""
    matched: int = 0
    applied: int = 0

    KINDS = (
        "delay", "status", "reset", "truncate", "malformed", "body", "transform",
        "redirect", "drip", "drip-head", "echo",
    )  # fmt: skip

    def __post_init__(self) -> None:
        if self.kind not in self.KINDS:
            raise ValueError(f"unknown fault {self.kind!r}")

    def due(self, request: Request) -> bool:
        """Count the request if it matches; True when this fault acts on it (caller holds lock)."""
        if self.match is not None and not self.match(request):
            return False
        self.matched += 1
        if self.matched <= self.after or (self.matched - self.after - 1) % self.every:
            return False
        if self.times is not None and self.applied >= self.times:
            return False
        self.applied += 1
        return True


@dataclass
class Seen:
    """One request the proxy answered: what was asked, what was done, what status was sent."""

    method: str
    path: str
    fault: str | None
    status: int | None
    authorization: str | None
    at: float
    body: bytes = b""


class FaultProxy:
    def __init__(self, upstream: str | None, port: int = 0, host: str = "127.0.0.1") -> None:
        if not host.startswith("127."):
            raise ValueError("the fault proxy binds loopback addresses only")
        parts = urlsplit(upstream or "")
        self.upstream = upstream
        self.upstream_host = parts.hostname or "127.0.0.1"
        self.upstream_port = parts.port or 80
        self.host = host
        self.faults: list[Fault] = []
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = port
        self.up()

    # -- control ----------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def add(self, fault: Fault) -> Fault:
        with self._lock:
            self.faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self.faults.clear()

    def reset_log(self) -> None:
        with self._lock:
            self.seen.clear()

    def statuses(self) -> dict[str, int]:
        """How many answers of each kind: 'pass', or the fault kind."""
        counts: dict[str, int] = {}
        with self._lock:
            for seen in self.seen:
                key = seen.fault or "pass"
                counts[key] = counts.get(key, 0) + 1
        return counts

    def up(self) -> None:
        if self._server is not None:
            return
        server = _Server((self.host, self.port), _Handler)
        server.proxy = self
        self.port = int(server.server_address[1])
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="faultproxy", daemon=True)  # fmt: skip
        self._thread.start()

    def down(self) -> None:
        """Stop listening and drop every open connection: new connections are refused."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            _abort(connection, wake=True)
        if self._thread is not None:
            self._thread.join(timeout=10)

    def close(self) -> None:
        self.down()

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the work ---------------------------------------------------------------------------

    def _decide(self, request: Request) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.due(request):
                    return fault
        return None

    def _record(self, request: Request, fault: Fault | None, status: int | None) -> None:
        with self._lock:
            self.seen.append(
                Seen(request.method, request.path, fault.kind if fault else None, status,
                     request.headers.get("authorization"), time.monotonic(), request.body)
            )  # fmt: skip

    def forward(self, request: Request) -> tuple[int, str, list[tuple[str, str]], bytes]:
        if self.upstream is None:  # standalone: nothing behind it
            return 502, "No Upstream", [], _outcome("no upstream server")
        connection = http.client.HTTPConnection(
            self.upstream_host, self.upstream_port, timeout=UPSTREAM_TIMEOUT_S
        )
        try:
            headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
            connection.request(request.method, request.path, body=request.body or None,
                               headers=headers)  # fmt: skip
            response = connection.getresponse()
            body = response.read()
            kept = [(k, v) for k, v in response.getheaders() if k.lower() not in HOP_BY_HOP]
            return response.status, response.reason, kept, body
        finally:
            connection.close()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128
    proxy: FaultProxy

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hung up (one that stops reading at its size cap or deadline resets
        the connection) is what the hostile tests expect, not an error to print."""
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        with self.server.proxy._lock:
            self.server.proxy._connections.add(self.connection)

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()
        with self.server.proxy._lock:
            self.server.proxy._connections.discard(self.connection)

    def log_message(self, *_: Any) -> None:
        pass

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        request = Request(
            self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body
        )
        proxy = self.server.proxy
        fault = proxy._decide(request)
        try:
            self._answer(proxy, request, fault)
        except OSError:
            self.close_connection = True  # the client went away (it timed out): nothing to do

    def _answer(self, proxy: FaultProxy, request: Request, fault: Fault | None) -> None:
        kind = fault.kind if fault else None
        if fault is not None and kind in ("redirect", "echo"):
            self._hostile(proxy, request, fault)
            return
        if fault is not None and kind in ("drip", "drip-head"):
            self._drip(proxy, request, fault)
            return
        if fault is not None and kind in ("status", "malformed", "body"):
            status = fault.status if kind != "malformed" else 200
            payload = fault.body
            if kind == "malformed":
                payload = b'{"resourceType": "Bundle", "type": "searchset", "entry": [{"resou'
                payload += b"\x00<html>not json</html>"
            elif payload is None:
                payload = _outcome(f"injected {status}")
            proxy._record(request, fault, status)
            self._send(status, [("Content-Type", "application/fhir+json"), *fault.headers.items()],
                       payload)  # fmt: skip
            return
        if fault is not None and kind == "delay":
            time.sleep(fault.seconds)
        status, reason, headers, payload = proxy.forward(request)
        if fault is not None and kind == "transform" and fault.fn is not None:
            payload = fault.fn(payload, request)
        if fault is not None and kind == "truncate":
            payload = payload[: fault.keep]
        proxy._record(request, fault, status)
        if fault is not None and kind == "reset":
            head = self._head(status, reason, headers, len(payload))
            self.wfile.write(head + payload[: fault.keep])
            self.wfile.flush()
            self.close_connection = True
            _abort(self.connection)
            return
        self._send(status, headers, payload, reason)

    def _hostile(self, proxy: FaultProxy, request: Request, fault: Fault) -> None:
        """A redirect elsewhere, or an error that quotes our Authorization header."""
        if fault.kind == "redirect":
            status = fault.status if fault.status != 200 else 307
            location = fault.location.replace("{path}", request.path.lstrip("/"))
            headers = [("Location", location), *fault.headers.items()]
            payload = b""
        else:
            status = fault.status if fault.status != 200 else 400
            quoted = request.headers.get("authorization", "(none)")
            headers = [("Content-Type", "application/fhir+json"), *fault.headers.items()]
            payload = _outcome(f"Request refused. Authorization: {quoted} is not accepted here")
        proxy._record(request, fault, status)
        self._send(status, headers, payload)

    def _drip(self, proxy: FaultProxy, request: Request, fault: Fault) -> None:
        """Headers at once, then one byte every `fault.seconds` until done or the client goes."""
        if fault.body is not None:
            status, reason, headers, payload = 200, "OK", [], fault.body
            headers = [("Content-Type", "application/fhir+json")]
        else:
            status, reason, headers, payload = proxy.forward(request)
        proxy._record(request, fault, status)
        head = self._head(status, reason, [*headers, *fault.headers.items()], len(payload))
        if fault.kind == "drip-head":
            payload = head + payload
        else:
            self.wfile.write(head)
            self.wfile.flush()
        for index in range(len(payload)):
            self.wfile.write(payload[index : index + 1])
            self.wfile.flush()
            time.sleep(fault.seconds)
        self.close_connection = True

    def _head(self, status: int, reason: str, headers: list[tuple[str, str]], length: int) -> bytes:
        lines = [f"HTTP/1.1 {status} {reason}"]
        lines += [f"{k}: {v}" for k, v in headers]
        lines.append(f"Content-Length: {length}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def _send(
        self, status: int, headers: list[tuple[str, str]], payload: bytes, reason: str = ""
    ) -> None:
        self.wfile.write(self._head(status, reason or "Injected", headers, len(payload)) + payload)
        self.wfile.flush()

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _handle


def _abort(connection: socket.socket, *, wake: bool = False) -> None:
    """Close with a TCP reset (SO_LINGER 0): the peer sees 'connection reset by peer'.

    `wake` first shuts the socket down, so a handler thread blocked reading it returns.
    """
    try:
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        if wake:
            connection.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    with contextlib.suppress(OSError):
        connection.close()


# --- helpers for transforms ----------------------------------------------------------------------


def rewrite_next_links(payload: bytes, new_url: Callable[[str], str | None]) -> bytes:
    """Every Bundle's `next` link (nested in batch-response entries too) replaced by
    `new_url(old)`; None removes the link."""

    def rewrite(bundle: dict[str, Any]) -> None:
        links = []
        for link in bundle.get("link") or []:
            if isinstance(link, dict) and link.get("relation") == "next":
                replaced = new_url(str(link.get("url")))
                if replaced is None:
                    continue
                link = {**link, "url": replaced}
            links.append(link)
        if links or "link" in bundle:
            bundle["link"] = links

    return _each_bundle(payload, rewrite)


def add_next_link(payload: bytes, url: Callable[[Request], str], request: Request) -> bytes:
    """Give every searchset Bundle in the answer a `next` link (to `url(request)`)."""

    def add(bundle: dict[str, Any]) -> None:
        if bundle.get("type") == "searchset":
            links = [k for k in bundle.get("link") or [] if k.get("relation") != "next"]
            bundle["link"] = [*links, {"relation": "next", "url": url(request)}]

    return _each_bundle(payload, add)


def _each_bundle(payload: bytes, change: Callable[[dict[str, Any]], None]) -> bytes:
    """The JSON answer with `change` applied to every Bundle in it, outermost first (a batch
    response and the Bundles in its entries); a body that is not JSON is left as it is."""
    try:
        data = json.loads(payload)
    except ValueError:
        return payload

    def walk(resource: Any) -> None:
        if not isinstance(resource, dict) or resource.get("resourceType") != "Bundle":
            return
        change(resource)
        for entry in resource.get("entry") or []:
            if isinstance(entry, dict):
                walk(entry.get("resource"))

    walk(data)
    return json.dumps(data).encode()


# --- hostile bodies --------------------------------------------------------------------------------


def gzip_bomb(inflated_bytes: int) -> bytes:
    """A gzip body (send with `GZIP` headers) that inflates to a searchset Bundle of about
    `inflated_bytes`, nearly all whitespace: valid JSON, ~1,000 times smaller on the wire.
    Compressed piece by piece, so making it costs this process no memory to speak of."""
    head = b'{"resourceType": "Bundle", "type": "searchset", "entry": ['
    tail = b"]}"
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    parts = [packer.compress(head)]
    piece = b" " * (1 << 20)
    remaining = max(0, inflated_bytes - len(head) - len(tail))
    while remaining > 0:
        parts.append(packer.compress(piece[: min(remaining, len(piece))]))
        remaining -= len(piece)
    parts.append(packer.compress(tail))
    parts.append(packer.flush())
    return b"".join(parts)


def deeply_nested(levels: int) -> bytes:
    """A searchset Bundle whose one Observation carries extensions nested so that the JSON is
    about `levels` deep (each extension is an object in an array: two levels)."""
    pairs = max(1, levels // 2)
    inner = '{"url": "x", "extension": [' * pairs + "]}" * pairs
    return (
        '{"resourceType": "Bundle", "type": "searchset", "entry": [{"search": {"mode": "match"}, '
        '"resource": {"resourceType": "Observation", "id": "deep", "status": "final", '
        f'"code": {{"text": "x"}}, "extension": [{inner}]}}}}]}}'
    ).encode()
