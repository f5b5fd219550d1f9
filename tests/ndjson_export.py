"""Bundles -> Bulk Data NDJSON (one file per resource type), for tests of the NDJSON sources.

An `$export` has no Bundle and no fullUrl, so `urn:uuid:` references are rewritten to the
`Type/id` of the resource they point to, as a server's export would show them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def _rewrite(value: Any, targets: dict[str, str]) -> Any:
    if isinstance(value, dict):
        return {
            key: targets.get(item, item)
            if key == "reference" and isinstance(item, str)
            else _rewrite(item, targets)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_rewrite(item, targets) for item in value]
    return value


def bundles_to_ndjson(files: Iterable[Path], out: Path) -> Path:
    """Write every resource of the Bundles to out/<Type>.ndjson; returns `out`."""
    out.mkdir(parents=True, exist_ok=True)
    lines: dict[str, list[str]] = {}
    for file in files:
        bundle = json.loads(file.read_text(encoding="utf-8"))
        entries = [e for e in bundle.get("entry", []) if isinstance(e.get("resource"), dict)]
        targets = {
            e["fullUrl"]: f"{e['resource']['resourceType']}/{e['resource']['id']}"
            for e in entries
            if isinstance(e.get("fullUrl"), str) and isinstance(e["resource"].get("id"), str)
        }
        for entry in entries:
            resource = _rewrite(entry["resource"], targets)
            lines.setdefault(str(resource.get("resourceType")), []).append(json.dumps(resource))
    for resource_type, rows in lines.items():
        (out / f"{resource_type}.ndjson").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return out
