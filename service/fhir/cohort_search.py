"""Run searches select cohorts, not people: an allow-list of Patient search parameters.

A run search is sent with the service's own FHIR credentials, and its answer (which patients
match) is returned to the caller. `Patient?name=...&birthdate=...` would make the service a
general patient lookup; `Patient?_has:Condition:patient:code=...` selects a cohort by clinical
data. Only parameters on the allow-list pass (settings `run_search_params`,
MEDCARE_RUN_SEARCH_PARAMS); the first one that does not is named in the refusal.

The query is parsed the way `ServerSource` parses it before sending (the part after the last
`?`, percent-decoded), so what is checked is what the server receives.

Allow-list entries are parameter names, compared after removing a modifier (`_id:missing` is
`_id`). `_has` chains are compared segment by segment (`_has:Condition:*:code`: `*` stands for
one segment, here the reference parameter, `patient` or `subject`); a modifier on a `_has`
chain's last parameter is part of the name, so `..:code:text` needs its own entry.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from fnmatch import fnmatchcase
from urllib.parse import parse_qsl

# What a search parameter name may look like; anything else (`;`, spaces, quotes) is refused
# before matching, so an odd separator cannot hide a second parameter from the check.
_NAME = re.compile(r"[A-Za-z0-9_\-.:]+")


class SearchNotAllowed(ValueError):
    """A run search uses a parameter outside the allow-list; `parameter` names it."""

    def __init__(self, parameter: str) -> None:
        shown = (
            parameter if _NAME.fullmatch(parameter) and len(parameter) <= 100 else "(unreadable)"
        )
        super().__init__(
            f"search parameter {shown!r} is not allowed in a population search: run searches "
            "select cohorts by clinical data, not people (allowed parameters: "
            "MEDCARE_RUN_SEARCH_PARAMS)"
        )
        self.parameter = shown


def search_parameters(search: str) -> list[str]:
    """The parameter names of a 'Patient?...' search (or of its bare query), decoded."""
    text = search.strip()
    if text in ("Patient", "Patient?"):
        return []
    _, _, query = text.rpartition("?")
    return [name for name, _ in parse_qsl(query, keep_blank_values=True)]


def _allowed(name: str, patterns: Iterable[str]) -> bool:
    if not _NAME.fullmatch(name):
        return False
    if name.startswith("_has:"):
        segments = name.split(":")
        return any(
            len(p.split(":")) == len(segments)
            and all(fnmatchcase(s, ps) for s, ps in zip(segments, p.split(":"), strict=True))
            for p in patterns
            if p.startswith("_has:")
        )
    base = name.split(":", 1)[0]
    return any(not p.startswith("_has:") and fnmatchcase(base, p) for p in patterns)


def check_cohort_search(search: str, allowed: Iterable[str]) -> None:
    """Raise SearchNotAllowed for the first parameter of `search` not on the allow-list."""
    patterns = tuple(allowed)
    for name in search_parameters(search):
        if not _allowed(name, patterns):
            raise SearchNotAllowed(name)
