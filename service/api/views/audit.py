"""GET /v1/audit: the audit log for a privacy officer (issue 15 item 7).

Paged by time range and entry id (`since`, `until`, `after`, `limit`), as JSON or CSV. The
export is itself a look at who saw which patient, so it is recorded like any other (the hook in
service/audit.py names it `export`). Needs the audit permission, which no other role implies.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Response
from flask_smorest import Blueprint
from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from service.api.deps import runtime
from service.api.endpoints import guarded
from service.api.permissions import Permission
from service.audit import entries_csv, entry_row
from service.store.audit import MAX_AUDIT_PAGE

EARLIEST = datetime.min.replace(tzinfo=UTC)

blp = Blueprint(
    "audit", __name__, url_prefix="/v1", description="Audit log of every look at patient data"
)


class AuditArgsSchema(Schema):
    since = fields.AwareDateTime(
        load_default=None, metadata={"description": "from this time (default: 24 hours ago)"}
    )
    until = fields.AwareDateTime(
        load_default=None, metadata={"description": "before this time (default: now)"}
    )
    after = fields.Integer(
        load_default=0, validate=validate.Range(min=0, max=2**62),
        metadata={"description": "entries after this id: the previous page's next_after"},
    )  # fmt: skip
    limit = fields.Integer(load_default=MAX_AUDIT_PAGE,
                           validate=validate.Range(min=1, max=MAX_AUDIT_PAGE))  # fmt: skip
    format = fields.String(load_default="json", validate=validate.OneOf(("json", "csv")))

    @validates_schema
    def _range(self, data: dict[str, Any], **_: Any) -> None:
        if data["since"] and data["until"] and data["since"] >= data["until"]:
            raise ValidationError("since must be before until", "since")


class AuditEntrySchema(Schema):
    id = fields.Integer()
    recorded_at = fields.String()
    actor = fields.String(metadata={"description": "user, JWT subject or api-token:<digest>"})
    action = fields.String()
    patients = fields.List(fields.String())
    outcome = fields.Integer(metadata={"description": "the HTTP status the caller got"})
    client = fields.String(allow_none=True)


class AuditPageSchema(Schema):
    items = fields.List(fields.Nested(AuditEntrySchema))
    next_after = fields.Integer(
        allow_none=True, metadata={"description": "pass as `after` for the next page; null: done"}
    )


@blp.route("/audit", methods=["GET"])
@guarded(blp, Permission.AUDIT, AuditPageSchema, args=AuditArgsSchema, location="query")
@blp.doc(responses={"200": {"description": "the entries: JSON, or CSV with format=csv", "content": {
    "application/json": {"schema": {"$ref": "#/components/schemas/AuditPage"}},
    "text/csv": {"schema": {"type": "string"}},
}}})  # fmt: skip
def export(args: dict[str, Any]) -> Any:
    """Who looked at which patient, when, how and from where; `format=csv` for a spreadsheet."""
    now = runtime().clock.now().astimezone(UTC)
    until: datetime = args["until"] or now
    since: datetime = args["since"] or max(until, EARLIEST + timedelta(days=1)) - timedelta(days=1)
    entries = runtime().store.audit_entries(since, until, after=args["after"], limit=args["limit"])
    next_after = entries[-1].id if len(entries) == args["limit"] else None
    if args["format"] == "csv":
        response = Response(entries_csv(entries), mimetype="text/csv")
        if next_after is not None:
            response.headers["X-Next-After"] = str(next_after)
        return response
    return {"items": [entry_row(entry) for entry in entries], "next_after": next_after}
