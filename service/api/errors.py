"""One error shape for every error, produced by the schema that documents it.

Every failure the API returns, including Flask's own 404/405/413 and validation errors from
webargs, goes through `error_response`, which dumps `ErrorSchema`: the OpenAPI document and the
bodies cannot drift apart. Exception text never reaches a body; unexpected errors are logged by
type with a correlation id the caller can quote.
"""

from __future__ import annotations

import logging
import traceback
import uuid
from typing import Any

from flask import Flask, Response, jsonify
from marshmallow import Schema, fields
from werkzeug.exceptions import HTTPException

log = logging.getLogger("medcare_screen.api")


class ErrorDetailSchema(Schema):
    status = fields.Integer(required=True, metadata={"description": "HTTP status code"})
    code = fields.String(required=True, metadata={"description": "machine-readable error code"})
    message = fields.String(required=True, metadata={"description": "what went wrong, for people"})
    details = fields.Dict(
        keys=fields.String(), metadata={"description": "field errors or upstream (FHIR) context"}
    )
    correlation_id = fields.String(metadata={"description": "quote this when reporting a 5xx"})


class ErrorSchema(Schema):
    error = fields.Nested(ErrorDetailSchema, required=True)


_ERROR_SCHEMA = ErrorSchema()


class ApiError(Exception):
    """An error raised by a view, with its status, code and safe message."""

    def __init__(
        self, status: int, code: str, message: str, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details


def error_response(
    status: int, code: str, message: str, details: dict[str, Any] | None = None, **extra: str
) -> Response:
    body: dict[str, Any] = {"status": status, "code": code, "message": message, **extra}
    if details:
        body["details"] = details
    response = jsonify(_ERROR_SCHEMA.dump({"error": body}))
    response.status_code = status
    if status == 401:  # every 401 says how to authenticate (RFC 9110 §15.5.2)
        response.headers["WWW-Authenticate"] = 'Bearer realm="medcare-screen"'
    return response


_CODES = {
    400: "bad-request", 401: "unauthorized", 403: "forbidden", 404: "not-found",
    405: "method-not-allowed", 409: "conflict", 413: "request-too-large",
    415: "unsupported-media-type", 422: "invalid-request", 429: "too-many-requests",
}  # fmt: skip


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(error: ApiError) -> Response:
        return error_response(error.status, error.code, error.message, error.details)

    @app.errorhandler(HTTPException)
    def _http_error(error: HTTPException) -> Response:
        status = error.code or 500
        details = None
        messages = getattr(error, "data", {}).get("messages") if hasattr(error, "data") else None
        if messages:
            details = {"fields": messages}  # webargs validation: field names and messages only
        message = error.description or error.name
        if status == 422:
            message = "the request does not match its schema"
        return error_response(status, _CODES.get(status, "http-error"), message, details)

    @app.errorhandler(Exception)
    def _unexpected(error: Exception) -> Response:
        correlation_id = uuid.uuid4().hex[:12]
        # the traceback's frames, not the exception's message: a message may quote data
        frames = "".join(traceback.format_tb(error.__traceback__))
        log.error(
            "unexpected %s (correlation %s)\n%s", type(error).__name__, correlation_id, frames
        )
        return error_response(
            500, "internal-error", "an unexpected error occurred", correlation_id=correlation_id
        )
