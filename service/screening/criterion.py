"""A criterion of criteria.md §3, declared once: its id, its kind, what it reads, how it decides.

Each criteria module declares its criteria with the `criterion` decorator right above their
decide functions (or with `manual` for those EHR data cannot decide); registry.py lists them in
§3 order, and everything else (the result contract's CRITERIA, the engine's loop, the safety net
for unreadable resources) is derived from that list instead of kept in step by hand.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from service.screening.context import Context
from service.screening.decision import Decision, Kind, Result

Decide = Callable[[Context], Decision]


@dataclass(frozen=True)
class Criterion:
    """One criterion. `reads` names the concepts (value sets, drug classes) it depends on: an
    unreadable or ignored resource of one of them is reported in its reason, and one that could
    not be read keeps it from ruling the patient out (criteria.md §1)."""

    id: str
    kind: Kind
    decide: Decide
    reads: frozenset[str] = frozenset()

    def __call__(self, ctx: Context) -> Decision:
        return self.decide(ctx)


def criterion(
    criterion_id: str, kind: Kind, reads: Iterable[str] = ()
) -> Callable[[Decide], Criterion]:
    """Declares the decorated decide function as the criterion `criterion_id`."""

    def declare(decide: Decide) -> Criterion:
        return Criterion(criterion_id, kind, decide, frozenset(reads))

    return declare


def manual(criterion_id: str, kind: Kind, reason: str) -> Criterion:
    """A criterion EHR data cannot decide: always `manual`, with `reason`, always for review."""

    def decide(_: Context) -> Decision:
        return Decision(Result.MANUAL, reason)

    decide.__name__ = criterion_id.replace("-", "_")
    return Criterion(criterion_id, kind, decide)
