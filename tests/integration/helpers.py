"""Helpers for integration tests: clone a fixture under a new patient id, normalise versions."""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

from tests.conftest import FIXTURES

_HISTORY = re.compile(r"/_history/[A-Za-z0-9\-]+")


def without_versions(data: Any) -> Any:
    """The same JSON with every '/_history/<version>' removed (servers add versions; files don't)."""
    return json.loads(_HISTORY.sub("", json.dumps(data)))


def cloned_fixture(case: str, new_patient_id: str) -> dict[str, Any]:
    """A fixture Bundle with every id and reference renamed, so a test can change it freely."""
    old = f"fx-{case}"
    text = (FIXTURES / f"{case}.json").read_text()
    bundle: dict[str, Any] = json.loads(text.replace(old, new_patient_id))
    for entry in bundle["entry"]:
        resource = entry["resource"]
        key = f"clone:{resource['resourceType']}/{resource['id']}"
        entry["fullUrl"] = f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, key)}"
    return bundle
