"""What a source may drop before decoding anything: the screener's selection, told in advance.

The extractor (extract.py) drops an Observation whose `code` is in none of the Observation value
sets before it reads anything else. Handing those codes to the NDJSON partition lets it skip
such lines as raw bytes, which is most of an export (vital signs, routine labs). It is exact:
the records then hold only Observations the extractor would have kept, and every screen result
is the same. When an Observation value set matches by prefix, no line can be ruled out by exact
codes, and every Observation is kept.

The extractor also reads an unmapped Observation whose text names a near-miss concept
(mappings/near-misses.yaml): its reason then points at it. So an Observation line that contains
a near-miss phrase in any case is kept too, and so is any Observation line that is not plain
ASCII (its decoded text could hold an accented phrase, or case-fold into one).
"""

from __future__ import annotations

import re

from service.fhir.ndjson_stream import LineFilter
from service.mapping.model import Mappings, normalize_code
from service.read_plan import ReadPlan, read_plan
from service.read_plan import observation_match_codes as observation_codes  # noqa: F401


def observation_pattern(codes: frozenset[str]) -> re.Pattern[bytes] | None:
    """One regex matching a `"code"` value that normalize_code turns into one of `codes`.

    normalize_code strips surrounding whitespace, removes every dot and case-folds. On plain
    ASCII (the only lines the partition lets this regex decide) that is: whitespace, then any
    dots around and between the characters of a code, in any case, then whitespace. None when a
    code is not ASCII (case-folding is then more than lower-casing): every line is then checked
    value by value.
    """
    if not codes or not all(code.isascii() for code in codes):
        return None
    dotted = sorted(
        (rb"\.*".join(re.escape(char.encode()) for char in code) for code in codes),
        key=len,
        reverse=True,
    )
    return re.compile(rb'"code"\s*:\s*"\s*\.*(?i:' + b"|".join(dotted) + rb')\.*\s*"')


def near_miss_pattern(phrases: tuple[str, ...]) -> re.Pattern[bytes] | None:
    """A bytes regex found in every plain-ASCII line whose text an Observation near-miss
    pattern (of these phrases) matches: the ASCII phrases, in any case, anywhere (word
    boundaries and exclusions only ever narrow the extractor's match). None when there are no
    Observation near misses."""
    ascii_phrases = sorted((p for p in phrases if p.isascii()), key=len, reverse=True)
    if not phrases:
        return None
    if not ascii_phrases:
        return re.compile(rb"(?!)")  # only accented phrases: the non-ASCII lines are kept anyway
    return re.compile(b"(?i:" + b"|".join(re.escape(p.encode()) for p in ascii_phrases) + b")")


def line_filter(mappings: Mappings) -> LineFilter:
    """The partition filter for these mappings (see the module docstring)."""
    return line_filter_of(read_plan(mappings))


def line_filter_of(plan: ReadPlan) -> LineFilter:
    """The partition filter of a read plan: its types, its Observation codes and near misses."""
    codes = plan.match_codes
    return LineFilter(
        kept_types=plan.kept_types,
        observation_codes=codes,
        normalize=normalize_code,
        observation_pattern=observation_pattern(codes) if codes is not None else None,
        near_miss_pattern=near_miss_pattern(plan.near_miss_phrases),
    )
