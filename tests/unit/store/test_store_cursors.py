"""Paging cursors: pure functions, no database."""

from __future__ import annotations

import pytest

from service.store import cursors
from service.store.cursors import BadCursor


def test_cursor_round_trips_and_is_opaque_text() -> None:
    cursor = cursors.encode(cursors.CHANGES_TAG, "", 42)
    assert cursor.isascii() and "=" not in cursor and "42" not in cursor
    assert cursors.decode(cursor, cursors.CHANGES_TAG, "") == 42


@pytest.mark.parametrize(
    "cursor",
    [
        "",
        "!!!!",
        "abc",  # not whole base64
        "YzE6OmFiYw",  # c1::abc: the position is not a number
        "YzE6Oi0x",  # c1::-1: negative
        "eDE6OjE",  # x1::1: unknown tag
        "Y" * 300,  # too long to be ours
    ],
)
def test_malformed_cursors_are_refused(cursor: str) -> None:
    with pytest.raises(BadCursor):
        cursors.decode(cursor, cursors.CHANGES_TAG, "")


def test_a_cursor_of_another_scope_is_refused() -> None:
    cursor = cursors.encode(cursors.RUN_RESULTS_TAG, "run-a", 3)
    with pytest.raises(BadCursor, match="another"):
        cursors.decode(cursor, cursors.RUN_RESULTS_TAG, "run-b")
