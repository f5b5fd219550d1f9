""" "New since my last visit": when this person last looked at the worklist.

Why a signed cookie of its own rather than the session or a table: the session ends at
sign-out and after SESSION_LIFETIME, but "new since my last visit" matters most the next
morning; a table would need a migration of the shared schema for one timestamp per person.
The cookie holds the subject id and two instants (this visit, the one before), signed with
the session key, for 90 days; it is read only for the same subject, so a second person on the
same browser does not inherit it. Loads within NEW_VISIT_AFTER of each other are one visit,
so paging and filtering do not reset what counts as new.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from flask import current_app, request
from itsdangerous import BadSignature, URLSafeSerializer
from werkzeug.wrappers import Response

from service.web.config import NEW_VISIT_AFTER

COOKIE = "medcare_last_visit"
MAX_AGE = timedelta(days=90)


def _serializer() -> URLSafeSerializer:
    return URLSafeSerializer(str(current_app.secret_key), salt="medcare-last-visit")


def _read(sub: str) -> tuple[datetime | None, datetime | None]:
    """(this visit, the visit before) for `sub`, or Nones."""
    raw = request.cookies.get(COOKIE)
    if not raw:
        return None, None
    try:
        data = _serializer().loads(raw)
        if not isinstance(data, dict) or data.get("sub") != sub:
            return None, None
        seen = datetime.fromisoformat(data["seen"]) if data.get("seen") else None
        before = datetime.fromisoformat(data["before"]) if data.get("before") else None
    except (BadSignature, KeyError, TypeError, ValueError):
        return None, None
    return seen, before


def last_visit(sub: str, now: datetime) -> datetime | None:
    """When `sub`'s previous visit was (None on a first visit): results that changed after it
    are new."""
    seen, before = _read(sub)
    if seen is None:
        return None
    return seen if now - seen > NEW_VISIT_AFTER else before


def remember_visit(response: Response, sub: str, now: datetime) -> None:
    seen, before = _read(sub)
    if seen is not None and now - seen > NEW_VISIT_AFTER:
        before = seen  # a new visit: the last one becomes "the one before"
    value = {"sub": sub, "seen": now.isoformat(), "before": before.isoformat() if before else None}
    response.set_cookie(
        COOKIE, _serializer().dumps(value), max_age=int(MAX_AGE.total_seconds()),
        httponly=True, samesite="Lax",
        secure=current_app.session_interface.get_cookie_secure(current_app),
    )  # fmt: skip
