"""What /openapi.json and /docs need beyond what the views declare.

Why a pass over the finished document: a client generator (openapi-generator, orval) needs an
`operationId` on every operation, the 401/403 answers of every authenticated one and the
`Location` header of every 202, and the views should not each repeat that. So after the
blueprints are registered, `complete_spec` fills in what a view did not say itself (a view's
own operationId or answer is kept).

Why vendored Swagger UI: /docs loaded its scripts from a CDN and was blank on a hospital
network without internet access. The dist files of the `swagger-ui-dist` npm package
(Apache-2.0, LICENSE beside them) are served from service/api/static/swagger-ui under
/docs/assets/, which flask-smorest's page points at (OPENAPI_SWAGGER_UI_URL).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from flask import Flask, Response, send_from_directory
from flask_smorest import Api

ASSETS_DIR = Path(__file__).resolve().parent / "static" / "swagger-ui"
ASSETS_URL = "/docs/assets/"
ASSETS_ENDPOINT = "docs_assets"
ASSETS_MAX_AGE_S = 86_400
METHODS = ("get", "put", "post", "delete", "patch")

_ERROR_REF = {"$ref": "#/components/responses/DEFAULT_ERROR"}
AUTH_ANSWERS = {
    "401": "no valid credentials",
    "403": "the credential lacks the permission",
}
LOCATION = {
    "description": "where the created resource is (poll it)",
    "schema": {"type": "string", "format": "uri-reference"},
}


def register_docs_assets(app: Flask) -> None:
    """Serve Swagger UI's files from the package, cacheable (they change with a release)."""

    def docs_asset(name: str) -> Response:
        response = send_from_directory(ASSETS_DIR, name, max_age=ASSETS_MAX_AGE_S)
        response.headers["Cache-Control"] = f"public, max-age={ASSETS_MAX_AGE_S}"
        return response

    app.add_url_rule(f"{ASSETS_URL}<path:name>", ASSETS_ENDPOINT, docs_asset)


def complete_spec(api: Api) -> None:
    """Fill in operationIds, the 401/403 answers and the 202 Location header."""
    paths: dict[str, dict[str, Any]] = api.spec._paths  # apispec keeps them here until dumped
    taken = {
        op["operationId"]
        for ops in paths.values()
        for method, op in ops.items()
        if method in METHODS and "operationId" in op
    }
    for path, operations in paths.items():
        for method in METHODS:
            operation = operations.get(method)
            if operation is None:
                continue
            if "operationId" not in operation:
                operation["operationId"] = _operation_id(method, path, taken)
                taken.add(operation["operationId"])
            responses = operation.setdefault("responses", {})
            if operation.get("security") != [] and path.startswith("/v1/"):
                for code, description in AUTH_ANSWERS.items():
                    responses.setdefault(code, {"description": description, **_error_content()})
            if "202" in responses:
                responses["202"].setdefault("headers", {}).setdefault("Location", LOCATION)


def _error_content() -> dict[str, Any]:
    return {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _operation_id(method: str, path: str, taken: set[str]) -> str:
    """`getRunsRunIdSummary` from GET /v1/runs/{run_id}/summary: stable, and unique."""
    words = [w for w in re.split(r"[^A-Za-z0-9]+", path) if w and w != "v1"]
    name = method + "".join(word[:1].upper() + word[1:] for word in words)
    candidate, n = name, 2
    while candidate in taken:
        candidate, n = f"{name}{n}", n + 1
    return candidate
