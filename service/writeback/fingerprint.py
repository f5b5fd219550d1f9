"""The fingerprint of a result: equal for equal content, so unchanged patients are not rewritten.

It hashes the canonical JSON of the §7 result without what changes between runs with the same
content: `as_of` (a daily re-screen of unchanged data must not rewrite every patient) and
`software_version` (an upgrade that changes no result must not either; the Provenance of the
stored version names the software that wrote it). Everything else counts: status, patient type,
strata, review lists, notes, and every criterion's result, reason and evidence.

Reasons quote the screening day ("Age 76 on 2026-11-26", "no score within 90 days before
2026-11-26"); that day is replaced by a placeholder before hashing, for the same reason.

FORMAT is part of the hash: bump it when the written ResearchSubject changes shape (extensions,
narrative), so the next screen rewrites subjects stored in the old shape.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from service.screening.result import ScreenResult

FORMAT = 2  # 2: meta.profile names the MEDCARE ResearchSubject profile
EXCLUDED = ("as_of", "software_version")
PREFIX = "sha256:"


def canonical_json(data: Any) -> bytes:
    """Sorted keys, no insignificant whitespace, UTF-8: one byte string per content."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def fingerprint(result: ScreenResult) -> str:
    """`sha256:<64 hex>` of the result's run-independent content."""
    content = {k: v for k, v in result.to_dict().items() if k not in EXCLUDED}
    content["writeback_format"] = FORMAT
    text = canonical_json(content).replace(result.as_of.encode(), b"{as_of}")
    return PREFIX + hashlib.sha256(text).hexdigest()
