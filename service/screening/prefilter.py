"""What a source may drop before decoding anything: the screener's selection, told in advance.

The extractor (extract.py) drops an Observation whose `code` is in none of the Observation value
sets before it reads anything else. Handing those codes to the NDJSON partition lets it skip
such lines as raw bytes, which is most of an export (vital signs, routine labs). It is exact:
the records then hold only Observations the extractor would have kept, and every screen result
is the same. When an Observation value set matches by prefix, no line can be ruled out by exact
codes, and every Observation is kept.
"""

from __future__ import annotations

import re

from service.fhir.ndjson_stream import LineFilter
from service.mapping.model import Mappings, normalize_code
from service.screening.concepts import OBSERVATION_CONCEPTS


def observation_codes(mappings: Mappings) -> frozenset[str] | None:
    """The normalised codes of every Observation value set; None when one matches by prefix."""
    codes: set[str] = set()
    for name in OBSERVATION_CONCEPTS:
        valueset = mappings.vs(name)
        if valueset.prefixes:
            return None
        codes.update(code for _system, code in valueset.exact_pairs())
    return frozenset(codes)


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


def line_filter(mappings: Mappings) -> LineFilter:
    """The partition filter for these mappings (see the module docstring)."""
    codes = observation_codes(mappings)
    return LineFilter(
        observation_codes=codes,
        normalize=normalize_code,
        observation_pattern=observation_pattern(codes) if codes is not None else None,
    )
