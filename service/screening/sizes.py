"""Lesion sizes and the protocol's size rules (criteria.md §4 "Size"; codes.md §4e).

A size sits in a component of a lesion-level finding, or in an Observation the finding names in
`hasMember` / `derivedFrom` (mCODE TumorSize, MII measurement). Which code means which axis is
data (mappings/lesion-sizes.yaml). The rules only ever *lower* certainty: a node at exactly
15 mm, a node with only a long axis of 15 mm or more, and a visceral lesion of 10 mm or less are
*possible* lesions; a node below 15 mm is set aside (named with its size). They never alone rule
a patient out (lesions/ turns a [0, 0] reached only by them into `unknown`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from service.fhir.record import type_and_id
from service.screening.bodysites import NODES, VISCERAL, Site
from service.screening.context import Context, fmt_number
from service.screening.facts import ClinicalFact

COUNTS, POSSIBLE, SET_ASIDE = "counts", "possible", "set-aside"


@dataclass(frozen=True)
class Size:
    """What was measured, in mm: the short axis, and the longest dimension (or a size of
    unstated axis, read as the longest when it is the only one)."""

    short_mm: float | None = None
    longest_mm: float | None = None
    rule_mm: float | None = None  # the project's lesion-size code: the axis the rule uses

    @property
    def empty(self) -> bool:
        return self.short_mm is None and self.longest_mm is None and self.rule_mm is None

    def describe(self) -> str:
        parts = []
        if self.short_mm is not None:
            parts.append(f"short axis {fmt_number(self.short_mm)} mm")
        if self.longest_mm is not None:
            parts.append(f"longest {fmt_number(self.longest_mm)} mm")
        if self.rule_mm is not None and not parts:
            parts.append(f"{fmt_number(self.rule_mm)} mm")
        return ", ".join(parts) or "no size"


@dataclass(frozen=True)
class SizeVerdict:
    outcome: str  # COUNTS, POSSIBLE or SET_ASIDE
    why: str  # '' when it counts with a size the rule accepts


def read_size(ctx: Context, finding: ClinicalFact) -> Size:
    """The sizes in the finding's components and in the size Observations it names."""
    holders: list[dict[str, Any]] = list(finding.resource.get("component") or [])
    for linked in _linked_size_observations(ctx, finding):
        holders.append(linked)
        holders.extend(linked.get("component") or [])
    short = longest = unspecified = rule = None
    vs = ctx.mappings.vs
    for holder in holders:
        if not isinstance(holder, dict):
            continue
        code = holder.get("code")
        mm = _millimetres(ctx, holder.get("valueQuantity"))
        if mm is None:
            continue
        if vs("size-short-axis").matches(code):
            short = mm if short is None else min(short, mm)
        elif vs("size-longest").matches(code):
            longest = mm if longest is None else max(longest, mm)
        elif vs("size-unspecified-axis").matches(code):
            unspecified = mm if unspecified is None else max(unspecified, mm)
        elif vs("size-rule-axis").matches(code):
            rule = mm
    if longest is None and unspecified is not None:
        # codes.md §4e: a size of unstated axis is the longest dimension when it is the only
        # one; beside a stated longest dimension it adds nothing (it is not larger).
        longest = unspecified
    return Size(short, longest, rule)


def _millimetres(ctx: Context, quantity: Any) -> float | None:
    if not isinstance(quantity, dict) or quantity.get("comparator"):
        return None
    value = quantity.get("value")
    unit = quantity.get("code") or quantity.get("unit")
    factor = ctx.mappings.lesion_maps.length_units_mm.get(str(unit)) if unit else None
    if not isinstance(value, int | float) or isinstance(value, bool) or factor is None:
        return None
    return float(value) * factor


def _linked_size_observations(ctx: Context, finding: ClinicalFact) -> list[dict[str, Any]]:
    wanted = set()
    for key in ("hasMember", "derivedFrom"):
        for reference in finding.resource.get(key) or []:
            if isinstance(reference, dict) and isinstance(reference.get("reference"), str):
                tail = type_and_id(reference["reference"]) or reference["reference"]
                wanted.add(tail.rsplit("/", 1)[-1])
    if not wanted:
        return []
    return [
        f.resource
        for f in ctx.facts.observations_of("size-observation")
        if f.resource.get("id") in wanted
    ]


def judge(ctx: Context, site: Site, size: Size) -> SizeVerdict:
    """The protocol's size rules for a node or a visceral lesion (criteria.md §4)."""
    params = ctx.params
    node_mm = params.min_node_short_axis_mm
    visceral_mm = params.min_visceral_diameter_mm
    if site.klass in NODES:
        short = size.short_mm if size.short_mm is not None else size.rule_mm
        if short is not None:
            if short > node_mm:
                return SizeVerdict(COUNTS, "")
            if short == node_mm:
                return SizeVerdict(
                    POSSIBLE,
                    f"short axis exactly {fmt_number(node_mm)} mm (RECIST measures nodes from {fmt_number(node_mm)} mm)",
                )
            return SizeVerdict(
                SET_ASIDE, f"short axis {fmt_number(short)} mm, below {fmt_number(node_mm)} mm"
            )
        if size.longest_mm is not None:
            if size.longest_mm < node_mm:
                return SizeVerdict(
                    SET_ASIDE,
                    f"longest dimension {fmt_number(size.longest_mm)} mm, so a short axis below "
                    f"{fmt_number(node_mm)} mm",
                )
            return SizeVerdict(
                POSSIBLE,
                f"only a longest dimension ({fmt_number(size.longest_mm)} mm) is recorded, "
                "no short axis",
            )
        return SizeVerdict(COUNTS, "no size recorded")
    if site.klass == VISCERAL:
        longest = size.longest_mm if size.longest_mm is not None else size.rule_mm
        if longest is not None:
            if longest <= visceral_mm:
                return SizeVerdict(
                    POSSIBLE,
                    f"{fmt_number(longest)} mm, not above {fmt_number(visceral_mm)} mm "
                    "(not measurable per the protocol, but still disease)",
                )
            return SizeVerdict(COUNTS, "")
        if size.short_mm is not None:
            return SizeVerdict(
                COUNTS, f"only a short axis ({fmt_number(size.short_mm)} mm) recorded"
            )
        return SizeVerdict(COUNTS, "no size recorded")
    return SizeVerdict(COUNTS, "")
