"""GET /v1/changes: results whose content changed, in a stable order, each exactly once."""

from __future__ import annotations

from typing import Any

from flask_smorest import Blueprint

from service.api.app import runtime
from service.api.errors import ApiError, ErrorSchema
from service.api.permissions import Permission, requires
from service.api.schemas import ChangesPageSchema, PageArgsSchema
from service.store import BadCursor

blp = Blueprint(
    "changes", __name__, url_prefix="/v1", description="Changes feed for polling engines"
)


@blp.route("/changes", methods=["GET"])
@requires(Permission.READ)
@blp.arguments(PageArgsSchema, location="query")
@blp.response(200, ChangesPageSchema)
@blp.alt_response(401, schema=ErrorSchema, description="no valid credentials")
@blp.alt_response(403, schema=ErrorSchema, description="the credential lacks the permission")
def changes(args: dict[str, Any]) -> dict[str, Any]:
    """Changes after `cursor` (from the start without one). Always follow `next_cursor`:
    an empty page means nothing new yet; ask again later with the same cursor."""
    try:
        items, cursor = runtime().store.changes(args["cursor"], args["limit"])
    except BadCursor as exc:
        raise ApiError(400, "bad-cursor", "the cursor is not one this API gave out") from exc
    return {"items": items, "next_cursor": cursor}
