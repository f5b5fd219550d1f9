"""/v1/reports/funnel.svg and /v1/reports/screening-log.csv: the trial team's reports (issue 15
item 5) through the API, so a hospital's dashboard shows what the worklist links to.

Who may read what: the funnel and the sponsor's de-identified log need the read permission;
the site's identified log (patient ids, full dates, free-text reasons) needs the review
permission, the one coordinators hold, because it is the patient list a coordinator keeps. The
permission is checked before the query is read, so a caller without it learns nothing.
"""

from __future__ import annotations

from flask import Response, request
from flask_smorest import Blueprint

from service.api.deps import runtime
from service.api.errors import ApiError
from service.api.permissions import Permission, require
from service.reports.funnel import funnel_svg
from service.reports.screening_log import Audience, screening_log_csv
from service.store.population_report import PopulationRow

blp = Blueprint(
    "reports", __name__, url_prefix="/v1/reports",
    description="The attrition funnel (SVG) and the screening log (CSV) of the current population",
)  # fmt: skip

AUDIENCE_PARAMETER = {
    "in": "query", "name": "audience", "required": False,
    "schema": {"type": "string", "enum": [a.value for a in Audience], "default": "sponsor"},
    "description": "site: identified (needs the review permission); sponsor: de-identified",
}  # fmt: skip


def _population() -> list[PopulationRow]:
    rt = runtime()
    return rt.store.current_population(rt.mappings.parameters.study_id)


@blp.route("/funnel.svg", methods=["GET"])
@blp.doc(
    operationId="getFunnelSvg",
    responses={"200": {"description": "the funnel picture",
                       "content": {"image/svg+xml": {"schema": {"type": "string"}}}}},
)  # fmt: skip
def get_funnel() -> Response:
    """The attrition funnel of the current results (criteria.md §3) as an SVG picture."""
    require(Permission.READ)
    svg = funnel_svg(row.body for row in _population())
    return Response(svg, 200, mimetype="image/svg+xml")


@blp.route("/screening-log.csv", methods=["GET"])
@blp.doc(
    operationId="getScreeningLogCsv",
    parameters=[AUDIENCE_PARAMETER],
    responses={
        "200": {"description": "the screening log (ICH-GCP shape) with a summary",
                "content": {"text/csv": {"schema": {"type": "string"}}}},
        "400": {"description": "an unknown audience"},
    },
)  # fmt: skip
def get_screening_log() -> Response:
    """The screening log of the current population as CSV, for the site or the sponsor."""
    text = request.args.get("audience", Audience.SPONSOR.value)
    if text == Audience.SITE.value:
        require(Permission.READ, Permission.REVIEW)
    else:
        require(Permission.READ)
    if text not in Audience._value2member_map_:
        raise ApiError(400, "invalid-audience", "audience must be site or sponsor", {})
    audience = Audience(text)
    body = screening_log_csv(_population(), audience)
    name = f"screening-log-{audience.value}.csv"
    response = Response(body, 200, mimetype="text/csv")
    response.headers["Content-Disposition"] = f'attachment; filename="{name}"'
    return response
