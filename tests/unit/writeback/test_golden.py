"""Byte-stable output, pinned: a reviewer sees exactly what goes to the server.

`golden/transaction-candidate.json` is the transaction for the sample result. When the output
changes on purpose, regenerate it (`UPDATE_GOLDEN=1 pytest tests/unit/writeback`) and, if the
ResearchSubject changed shape, raise `fingerprint.FORMAT` and record the new shape hash below, so
subjects stored in the old shape are rewritten at the next screen.
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import UTC, datetime
from pathlib import Path

from service.mapping.model import Parameters
from service.writeback.extensions import FINGERPRINT, extension_url
from service.writeback.fingerprint import FORMAT, canonical_json
from service.writeback.subject import build_research_subject
from service.writeback.transaction import build_transaction
from tests.unit.writeback.sample import make_result

GOLDEN = Path(__file__).parent / "golden" / "transaction-candidate.json"
NOW = datetime(2026, 11, 26, 9, 30, tzinfo=UTC)
# sha256 of the sample ResearchSubject without its fingerprint, per write-back format. Format 1
# re-recorded when the sample's rules_version became medcare-2 (a value, not a shape: the rules
# version is in the fingerprint, so every medcare-1 subject is rewritten anyway).
SUBJECT_SHAPES = {
    1: "9af46594a73cb04c562c2f4eaca71493b4fe7d82dbf2d1cc88638df3c55382d0",
    # 2: meta.profile names the MEDCARE ResearchSubject profile (profiles/)
    2: "47164d1498bd692ca5ec9786d57e7546257a7f9dd832917400f490f3457f9bd4",
}


def test_transaction_matches_the_golden_file(params: Parameters) -> None:
    text = json.dumps(
        build_transaction(make_result(), params, "ResearchStudy/5", NOW),
        indent=2,
        ensure_ascii=False,
    )
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.write_text(text + "\n", encoding="utf-8")
    assert GOLDEN.read_text(encoding="utf-8") == text + "\n"


def test_subject_shape_belongs_to_the_current_format(params: Parameters) -> None:
    subject = build_research_subject(make_result(), params, "ResearchStudy/5")
    url = extension_url(params.canonical_base, FINGERPRINT)
    subject["extension"] = [e for e in subject["extension"] if e["url"] != url]
    shape = hashlib.sha256(canonical_json(subject)).hexdigest()
    assert SUBJECT_SHAPES.get(FORMAT) == shape, (
        "the ResearchSubject changed shape: raise fingerprint.FORMAT and record "
        f"{FORMAT + 1}: {shape!r} in SUBJECT_SHAPES"
    )
