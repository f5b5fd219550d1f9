"""What every criterion function receives: the facts, the mappings and the day of the screen,
and the findings several criteria share (histology, progression, testosterone, metastases),
worked out once per screen through `once_per_screen`."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import TypeVar, cast

from service.fhir.dates import FhirDay
from service.mapping.model import Mappings, Parameters
from service.screening.facts import ClinicalFact, PatientFacts

Found = TypeVar("Found")


@dataclass
class Context:
    facts: PatientFacts
    mappings: Mappings
    as_of: date
    # the findings of `once_per_screen` functions, by function (see there)
    findings: dict[Callable[[Context], object], object] = field(default_factory=dict)

    @property
    def params(self) -> Parameters:
        return self.mappings.parameters

    def window_start(self, days: int) -> date:
        return self.as_of - timedelta(days=days)

    def in_window(self, day: FhirDay | None, days: int) -> bool:
        """Inside the inclusive window counting back `days` days from as_of."""
        return day is not None and self.window_start(days) <= day.earliest <= self.as_of


def once_per_screen(find: Callable[[Context], Found]) -> Callable[[Context], Found]:
    """Marks a finding more than one criterion reads (find_histology, find_progression,
    find_testosterone, find_metastases): worked out on the first call, then kept on the Context
    for the rest of the screen. It is kept under the function itself, not a name, so each
    finding is as typed as its function: mypy checks what one criterion hands another."""

    @functools.wraps(find)
    def kept(ctx: Context) -> Found:
        if find not in ctx.findings:
            ctx.findings[find] = find(ctx)
        return cast(Found, ctx.findings[find])

    return kept


def most_recent_first(facts: list[ClinicalFact]) -> list[ClinicalFact]:
    """Newest first; undated last; ties broken by reference so results are deterministic."""
    return sorted(
        facts,
        key=lambda f: (f.day.earliest if f.day else date.min, f.evidence.order_key),
        reverse=True,
    )


def fmt_number(value: float) -> str:
    """20 -> '20', 1.2 -> '1.2', 34.61 -> '34.61' (no float noise such as 34.610000000000003)."""
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.6g}" if abs(value) < 1e6 else f"{value:.1f}"


def join_names(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]
