"""The one page that tells a person what happened: errors, refusals, sign-out.

Why one: every refusal (wrong role, forged or stale form, provider down) says in plain words
what happened and that nothing was lost, in the same layout as the other pages, with the
HTTP status that a script reading the page would expect.
"""

from __future__ import annotations

from flask import make_response, render_template
from werkzeug.wrappers import Response


def message(
    status: int,
    title: str,
    text: str | None,
    *,
    link: tuple[str, str] | None = None,
    template: str = "message.html",
) -> Response:
    page = render_template(template, title=title, text=text, link=link)
    return make_response(page, status)
