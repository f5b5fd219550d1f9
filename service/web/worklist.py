"""The worklist page (/worklist): current results, filtered, sorted and paged on the server.

Why the query is parsed here and run in the store: the page only turns the address's
parameters into a `WorklistQuery` (a bad one gets a page saying which filter is wrong) and
renders one page of rows; service/store/worklist.py filters, sorts, counts and pages in SQL,
so the page stays fast at 10,000 patients. Every parameter is in the address, so a filtered
page can be bookmarked, shared and reloaded.
"""

from __future__ import annotations

from datetime import UTC, datetime, time
from typing import Any
from urllib.parse import urlencode

from flask import Blueprint, g, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from service.api import deps
from service.dispositions import Disposition
from service.store.worklist import SORTS, STATUSES, WorklistQuery
from service.web.auth import current_user, requires
from service.web.pages import message
from service.web.roles import Permission
from service.web.visits import last_visit, remember_visit

PAGE_SIZES = (25, 50, 100)
DISPOSITIONS = tuple(d.value for d in Disposition)
# "new" is said in full: a bare "New" is the badge of a result changed since the last visit.
DISPOSITION_LABELS = {d: d.replace("-", " ").capitalize() for d in DISPOSITIONS} | {
    Disposition.NEW.value: "New (not yet decided)"
}


class BadFilter(ValueError):
    """A filter the page cannot use; its message names the filter for the person."""


def add_routes(blp: Blueprint) -> None:
    @blp.get("/")
    def home() -> Any:
        return redirect(url_for("web.worklist"))

    @blp.get("/worklist")
    @requires(Permission.READ)
    def worklist() -> Any:
        runtime = deps.runtime()
        user = current_user()
        assert user is not None
        now = runtime.clock.now()
        previous = last_visit(user.sub, now)
        try:
            query, form = parse(request.args, runtime.mappings.parameters.study_id, previous)
        except BadFilter as exc:
            return message(400, "This filter cannot be used", f"{exc} Nothing was changed.",
                           link=("Show the whole worklist", "/worklist"))  # fmt: skip
        page = runtime.store.worklist(query)
        g.audit_patients = [row.patient for row in page.rows]  # one audit entry per page
        html = render_template(
            "worklist.html", page=page, form=form, previous_visit=previous,
            statuses=STATUSES, dispositions=DISPOSITION_LABELS, sorts=SORTS, page_sizes=PAGE_SIZES, link=_linker(form),
        )  # fmt: skip
        response = Response(html, mimetype="text/html")
        remember_visit(response, user.sub, now)
        return response


def parse(
    args: Any, study: str, previous_visit: datetime | None
) -> tuple[WorklistQuery, dict[str, str]]:
    """The address's parameters as a query, and as the form shows them back."""
    form = {key: str(args.get(key, "")).strip()[:40] for key in
            ("status", "disposition", "missing", "since", "new", "sort", "dir", "size", "page")}  # fmt: skip
    status = form["status"] or None
    if status is not None and status not in STATUSES:
        raise BadFilter(f"Status must be one of: {', '.join(STATUSES)}.")
    disposition = form["disposition"] or None
    if disposition is not None and disposition not in DISPOSITIONS:
        raise BadFilter(f"Disposition must be one of: {', '.join(DISPOSITIONS)}.")
    missing = form["missing"] or "any"
    if missing not in ("any", "some", "none"):
        raise BadFilter("Missing data must be any, some or none.")
    sort = form["sort"] or "changed"
    if sort not in SORTS:
        raise BadFilter(f"Sort must be one of: {', '.join(SORTS)}.")
    direction = form["dir"] or ("desc" if sort == "changed" else "asc")
    if direction not in ("asc", "desc"):
        raise BadFilter("Direction must be asc or desc.")
    size = _whole(form["size"] or "50", "Rows per page")
    if size not in PAGE_SIZES:
        raise BadFilter(f"Rows per page must be one of {', '.join(map(str, PAGE_SIZES))}.")
    number = _whole(form["page"] or "1", "Page")
    if not 1 <= number <= 100_000:
        raise BadFilter("Page must be a number from 1.")
    since = _day(form["since"]) if form["since"] else None
    if form["new"] == "1" and previous_visit is not None:
        since = max(since, previous_visit) if since else previous_visit
    form.update(missing=missing, sort=sort, dir=direction, size=str(size), page=str(number))
    query = WorklistQuery(
        study=study, status=status, disposition=disposition,
        missing=missing,  # type: ignore[arg-type]
        changed_since=since, sort=sort, descending=direction == "desc",
        offset=(number - 1) * size, limit=size,
    )  # fmt: skip
    return query, form


def _whole(raw: str, name: str) -> int:
    if not raw.isdigit():
        raise BadFilter(f"{name} must be a whole number.")
    return int(raw)


def _day(raw: str) -> datetime:
    """'Changed since' a day: from the start of that day (UTC)."""
    try:
        day = datetime.strptime(raw, "%Y-%m-%d").date()
    except ValueError:
        raise BadFilter("Changed since must be a date like 2026-11-26.") from None
    return datetime.combine(day, time(), tzinfo=UTC)


def _linker(form: dict[str, str]) -> Any:
    """A link to this worklist with some parameters changed (sort headers, pages)."""

    def link(**changes: Any) -> str:
        params = {**form, **{k: str(v) for k, v in changes.items()}}
        kept = {k: v for k, v in params.items() if v and not (k == "page" and v == "1")}
        return "/worklist" + ("?" + urlencode(kept) if kept else "")

    return link
