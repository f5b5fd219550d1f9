"""The trial team's reports for people signed in to the pages (issue 15 item 5): the screening
log as CSV and the attrition funnel as SVG, linked from the worklist.

Why routes of their own beside /v1/reports: the API takes bearer tokens, the pages a session,
so a coordinator's browser cannot follow the API's link. Both call the same pure functions
(service/reports) over the same store read, so the bytes are the same. Who may read what
follows the API's rule in the pages' roles: the identified site log (ids, full dates, reasons
as written) needs the permission to record, the one coordinators and investigators hold; the
de-identified sponsor log and the funnel need only a sign-in.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, request
from werkzeug.wrappers import Response

from service.api import deps
from service.reports.funnel import funnel_svg
from service.reports.screening_log import Audience, screening_log_csv
from service.store.population_report import PopulationRow
from service.web.auth import current_user, requires
from service.web.pages import message
from service.web.roles import Permission

AUDIENCES = tuple(audience.value for audience in Audience)


def add_routes(blp: Blueprint) -> None:
    @blp.get("/reports/screening-log.csv")
    @requires(Permission.READ)
    def screening_log() -> Any:
        text = str(request.args.get("audience", Audience.SPONSOR.value))
        if text not in AUDIENCES:
            return message(400, "No such screening log",
                           f"The audience must be one of: {', '.join(AUDIENCES)}.",
                           link=("Back to the worklist", "/worklist"))  # fmt: skip
        audience = Audience(text)
        user = current_user()
        if audience == Audience.SITE and not (user and user.may(Permission.RECORD)):
            role = user.role.value if user else "none"
            return message(403, "Not allowed",
                           f"Your role ({role}) may download the de-identified log for the "
                           "sponsor, not the site's identified log.",
                           link=("Back to the worklist", "/worklist"))  # fmt: skip
        response = Response(screening_log_csv(_population(), audience), mimetype="text/csv")
        name = f"screening-log-{audience.value}.csv"
        response.headers["Content-Disposition"] = f'attachment; filename="{name}"'
        response.headers["Cache-Control"] = "no-store"
        return response

    @blp.get("/reports/funnel.svg")
    @requires(Permission.READ)
    def funnel() -> Any:
        svg = funnel_svg(row.body for row in _population())
        return Response(svg, mimetype="image/svg+xml", headers={"Cache-Control": "no-store"})


def _population() -> list[PopulationRow]:
    runtime = deps.runtime()
    return runtime.store.current_population(runtime.mappings.parameters.study_id)
