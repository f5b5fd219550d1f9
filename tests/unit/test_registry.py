"""The criterion registry against criteria.md §3: every criterion once, in §3 order, its kind."""

from __future__ import annotations

import re
from collections import Counter

from service.screening.decision import Kind
from service.screening.registry import REGISTRY
from service.screening.result import CRITERIA
from tests.conftest import SHARED

_ROW = re.compile(r"^\| `([a-z0-9-]+)` \|")


def _spec_criteria() -> list[tuple[str, Kind]]:
    """(id, kind) of every row of the §3 tables, in order; `informational` where the rule says
    so (primary-treated sits in the inclusion table)."""
    text = (SHARED / "spec" / "criteria.md").read_text(encoding="utf-8")
    section = text.split("## 3. The criteria", 1)[1].split("\n## 4.", 1)[0]
    found: list[tuple[str, Kind]] = []
    kind = Kind.INCLUSION
    for line in section.splitlines():
        if line.startswith("### Exclusion"):
            kind = Kind.EXCLUSION
        row = _ROW.match(line)
        if row:
            informational = "kind `informational`" in line
            found.append((row.group(1), Kind.INFORMATIONAL if informational else kind))
    return found


def test_registry_is_criteria_md_section_3_in_order() -> None:
    spec = _spec_criteria()
    assert len(spec) == 21
    assert [(c.id, c.kind) for c in REGISTRY] == spec


def test_every_criterion_id_appears_exactly_once() -> None:
    counts = Counter(c.id for c in REGISTRY)
    assert [cid for cid, n in counts.items() if n != 1] == []
    assert set(counts) == {cid for cid, _ in _spec_criteria()}


def test_result_contract_is_derived_from_the_registry() -> None:
    assert tuple((c.id, c.kind) for c in REGISTRY) == CRITERIA
