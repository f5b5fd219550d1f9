"""Testosterone values: reading valueQuantity / valueString, converting to ng/dL (criteria.md §5).

Decisions are taken on the converted value rounded to 0.01 ng/dL, so a factor's last digits
cannot tip a result at the threshold (1.7336 nmol/L is 50.00 ng/dL, not 50.0005).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from service.mapping.model import Mappings
from service.screening.context import Context, fmt_number
from service.screening.facts import ClinicalFact

_STRING_RE = re.compile(r"^\s*(<=|>=|<|>|≤|≥)?\s*(\d+(?:[.,]\d+)?)\s*(\S.*?)?\s*$")
_COMPARATORS = {"≤": "<=", "≥": ">="}


@dataclass(frozen=True)
class Measured:
    """A testosterone value as recorded and, where the unit is known, in ng/dL."""

    comparator: str | None
    value: float
    unit: str
    unit_from: str  # "code", "unit" (code absent) or "string" (parsed from valueString)
    ng_dl: float | None

    def original(self) -> str:
        comparator = f"{self.comparator} " if self.comparator else ""
        return f"{comparator}{fmt_number(self.value)} {self.unit}".strip()

    def describe(self) -> str:
        """'1.2 nmol/L (34.6 ng/dL)', or '20 ng/dL' when no conversion was needed."""
        if self.ng_dl is None:
            return self.original()
        converted = fmt_number(round(self.ng_dl, 1))
        if self.unit.casefold() == "ng/dl":
            return self.original()
        comparator = f"{self.comparator} " if self.comparator else ""
        return f"{self.original()} ({comparator}{converted} ng/dL)"


class UnreadableValue(Exception):
    """The observation has a value we cannot interpret; the message says why (no value echoed)."""


def read_measurement(observation: dict[str, Any], mappings: Mappings) -> Measured | None:
    """The observation's value; None when it has none; UnreadableValue when it is not usable."""
    quantity = observation.get("valueQuantity")
    if isinstance(quantity, dict) and quantity.get("value") is not None:
        code, unit = quantity.get("code"), quantity.get("unit")
        unit_text, unit_from = (code, "code") if isinstance(code, str) and code else (unit, "unit")
        if not isinstance(unit_text, str) or not unit_text.strip():
            raise UnreadableValue("value without a unit")
        comparator = quantity.get("comparator")
        return _measured(
            comparator, float(quantity["value"]), unit_text.strip(), unit_from, mappings
        )
    text = observation.get("valueString")
    if isinstance(text, str):
        match = _STRING_RE.match(text)
        if not match or not match.group(3):
            raise UnreadableValue(f"value text {text!r} is not a number with a unit")
        comparator, number, unit_text = match.groups()
        comparator = _COMPARATORS.get(comparator, comparator)
        return _measured(comparator, float(number.replace(",", ".")), unit_text, "string", mappings)
    return None


def _measured(
    comparator: str | None, value: float, unit: str, unit_from: str, mappings: Mappings
) -> Measured:
    factor = mappings.unit_factors.get(unit.casefold())
    label = mappings.unit_labels.get(unit.casefold(), unit)
    ng_dl = None if factor is None else round(value * factor, 2)
    return Measured(comparator, value, label if factor else unit, unit_from, ng_dl)


def is_castrate(m: Measured, threshold: float) -> bool | None:
    """True below the threshold, False at or above it, None when a censored value cannot tell."""
    assert m.ng_dl is not None
    if m.comparator in ("<", "<="):
        return True if m.ng_dl <= threshold else None
    if m.comparator in (">", ">="):
        return False if m.ng_dl >= threshold else None
    return m.ng_dl < threshold


def is_above_castrate(m: Measured, threshold: float) -> bool | None:
    """True above the threshold (the exclusion), False at or below it, None when undecidable."""
    assert m.ng_dl is not None
    if m.comparator in ("<", "<="):
        return False if m.ng_dl <= threshold else None
    if m.comparator == ">":
        return True if m.ng_dl >= threshold else None
    if m.comparator == ">=":
        return True if m.ng_dl > threshold else None
    return m.ng_dl > threshold


def castrate_readings(
    ctx: Context, facts: Iterable[ClinicalFact]
) -> Iterator[tuple[ClinicalFact, Measured]]:
    """The total testosterone facts, in the order given, that show castration: a status that
    counts (criteria.md §5) and a value that reads, converts to ng/dL and lies below the
    threshold. An unreadable value is passed over here; the testosterone criterion reports it.
    One place, so every question about castration (the §5 discordant rise, an old ADT record,
    §4 castration by progression) takes the same values as castrate."""
    threshold = ctx.params.castrate_ng_dl
    for fact in facts:
        if fact.status not in ctx.params.observation_statuses_used:
            continue
        try:
            measured = read_measurement(fact.resource, ctx.mappings)
        except UnreadableValue:
            continue
        if measured is not None and measured.ng_dl is not None and is_castrate(measured, threshold):
            yield fact, measured
