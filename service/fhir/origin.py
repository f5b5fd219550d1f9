"""Where a request will really go: the origin `requests` connects to, not what a URL looks like.

Credentials may only go to the configured FHIR server. Checking that with one parser while the
HTTP library connects with another is how `http://a:1\\@b:2/x` slipped through: urllib.parse
saw host b, requests prepared `http://a:1/%5C@b:2/x` and connected to a. So the origin here is
computed from the URL exactly as `requests` prepares it (IDNA, percent-encoding, `\\`, case)
and as its adapter then picks the connection (urlparse of the prepared URL, default ports), and
the raw and prepared forms must agree. A URL with userinfo is refused outright: requests would
turn it into credentials of its own, and no FHIR server needs one in a link.
"""

from __future__ import annotations

from typing import Final
from urllib.parse import urlsplit

import requests
from urllib3.util import parse_url

DEFAULT_PORTS: Final = {"http": 80, "https": 443}


class UnsafeUrl(ValueError):
    """A URL whose destination cannot be stated safely (userinfo, parsers disagree, invalid)."""


def connect_origin(url: str) -> str:
    """'https://host:443': scheme, host and port that `requests` will connect to for `url`.

    Raises UnsafeUrl for a URL with userinfo, a URL that requests cannot prepare, a scheme other
    than http(s), or one whose prepared form names another host than urllib3's own parse of it.
    """
    raw = urlsplit(url)
    if "@" in raw.netloc or "\\" in raw.netloc:
        raise UnsafeUrl("the URL carries userinfo (user:password@) or a backslash in its host")
    prepared = requests.PreparedRequest()
    try:
        prepared.prepare_url(url, None)
    except (requests.exceptions.RequestException, ValueError) as exc:
        raise UnsafeUrl(f"the URL cannot be prepared ({type(exc).__name__})") from exc
    sent = prepared.url or ""
    adapter_view = urlsplit(sent)  # what requests' adapter picks the connection pool from
    urllib3_view = parse_url(sent)
    if adapter_view.username is not None or urllib3_view.auth:
        raise UnsafeUrl("the URL carries userinfo (user:password@)")
    scheme = adapter_view.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise UnsafeUrl(f"the URL's scheme is not http or https ({scheme or 'none'})")
    try:
        port = adapter_view.port or DEFAULT_PORTS[scheme]
    except ValueError as exc:
        raise UnsafeUrl("the URL's port is not a number") from exc
    host = (adapter_view.hostname or "").lower()
    other_host = (urllib3_view.host or "").lower().strip("[]")
    other_port = urllib3_view.port or DEFAULT_PORTS[scheme]
    if not host or host != other_host or port != other_port:
        raise UnsafeUrl("the URL's host is ambiguous (its parsers disagree)")
    return f"{scheme}://{f'[{host}]' if ':' in host else host}:{port}"


def origin_or_none(url: str) -> str | None:
    """connect_origin(), or None for an unsafe URL (which then matches no configured origin)."""
    try:
        return connect_origin(url)
    except UnsafeUrl:
        return None
