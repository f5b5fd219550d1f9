"""GET /v1/changes: results whose content changed, in a stable order, each exactly once."""

from __future__ import annotations

from typing import Any

from flask_smorest import Blueprint

from service.api.deps import service
from service.api.endpoints import guarded
from service.api.permissions import Permission
from service.api.schemas import ChangesPageSchema, PageArgsSchema

blp = Blueprint(
    "changes", __name__, url_prefix="/v1", description="Changes feed for polling engines"
)


@blp.route("/changes", methods=["GET"])
@guarded(blp, Permission.READ, ChangesPageSchema, args=PageArgsSchema, location="query")
def changes(args: dict[str, Any]) -> dict[str, Any]:
    """Changes after `cursor` (from the start without one). Always follow `next_cursor`:
    an empty page means nothing new yet; ask again later with the same cursor."""
    items, cursor = service().changes(args["cursor"], args["limit"])
    return {"items": items, "next_cursor": cursor}
