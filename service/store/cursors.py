"""Opaque paging cursors.

A cursor is base64url text so clients treat it as a token rather than a number to do sums
with; inside it is a tag, the scope it belongs to and a position. A cursor that does not
decode, belongs to another feed or another run, or is negative is refused with `BadCursor`
(a ValueError, so an HTTP layer can map it to 400) instead of silently restarting the feed.
"""

from __future__ import annotations

import base64
import binascii
import re

CHANGES_TAG = "c1"
RUN_RESULTS_TAG = "r1"
MAX_CURSOR_LENGTH = 200
_TEXT = re.compile(r"^(?P<tag>[a-z0-9]+):(?P<scope>[A-Za-z0-9-]*):(?P<position>\d{1,19})$")


class BadCursor(ValueError):
    """A paging cursor that this store did not hand out (or not for this feed)."""


def encode(tag: str, scope: str, position: int) -> str:
    raw = f"{tag}:{scope}:{position}".encode("ascii")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode(cursor: str, tag: str, scope: str) -> int:
    """The position inside `cursor`, which must carry `tag` and `scope`."""
    if not isinstance(cursor, str) or not 0 < len(cursor) <= MAX_CURSOR_LENGTH:
        raise BadCursor("malformed cursor")
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        text = base64.b64decode(padded, altchars=b"-_", validate=True).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError) as error:
        raise BadCursor("malformed cursor") from error
    match = _TEXT.match(text)
    if match is None:
        raise BadCursor("malformed cursor")
    if match["tag"] != tag or match["scope"] != scope:
        raise BadCursor("cursor belongs to another listing")
    return int(match["position"])
