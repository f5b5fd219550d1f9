"""/openapi.json a client generator understands, and /docs without a CDN (issue 14 item 7)."""

from __future__ import annotations

import re
from typing import Any

from flask.testing import FlaskClient

METHODS = ("get", "put", "post", "delete", "patch")


def operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, operation)
        for path, ops in spec["paths"].items()
        for method, operation in ops.items()
        if method in METHODS
    ]


def test_every_operation_has_a_unique_operation_id(client: FlaskClient) -> None:
    spec = client.get("/openapi.json").get_json()
    ids = [op.get("operationId") for _, _, op in operations(spec)]
    assert None not in ids
    assert len(ids) == len(set(ids))


def test_authenticated_operations_document_401_and_403(client: FlaskClient) -> None:
    spec = client.get("/openapi.json").get_json()
    for method, path, operation in operations(spec):
        if path.startswith("/v1/") and operation.get("security") != []:
            assert {"401", "403"} <= set(operation["responses"]), (method, path)


def test_the_202_of_a_run_documents_its_location_header(client: FlaskClient) -> None:
    spec = client.get("/openapi.json").get_json()
    created = spec["paths"]["/v1/runs"]["post"]["responses"]["202"]
    assert "Location" in created["headers"]


def test_run_summaries_are_typed(client: FlaskClient) -> None:
    schemas = client.get("/openapi.json").get_json()["components"]["schemas"]
    tiers = schemas["Attrition"]["properties"]["tiers"]
    assert "$ref" in str(tiers)
    assert "ready_for_board" in schemas["Tiers"]["properties"]


def test_docs_reference_no_external_host_and_every_asset_is_served(client: FlaskClient) -> None:
    page = client.get("/docs")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    references = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert references
    assert [ref for ref in references if "//" in ref] == []
    for ref in references:
        asset = client.get(ref)
        assert asset.status_code == 200, ref
        assert len(asset.get_data()) > 1000
        asset.close()
