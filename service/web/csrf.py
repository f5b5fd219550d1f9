"""CSRF protection for every POST form of the web pages: a per-session token, checked in
constant time.

Why our own few lines rather than a library: the pages have a handful of forms and no WTForms;
the token lives in the signed session cookie (nothing stored on the server), every form carries
it in a hidden field, and a POST without the session's token changes nothing.
"""

from __future__ import annotations

import hmac
import secrets

from flask import request, session

SESSION_KEY = "csrf"
FIELD = "csrf_token"


def csrf_token() -> str:
    """This session's token (made on first use); templates put it in every form."""
    token = session.get(SESSION_KEY)
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        session[SESSION_KEY] = token
    return token


def csrf_ok() -> bool:
    """Whether this POST carries the session's token (a session without one never passes)."""
    expected = session.get(SESSION_KEY)
    given = request.form.get(FIELD, "")
    if not isinstance(expected, str) or not given:
        return False
    return hmac.compare_digest(expected.encode(), given.encode())
