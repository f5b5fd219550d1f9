"""The partition's code selection agrees with the extractor's normalisation, value by value."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from service.fhir.ndjson_stream import NdjsonStream
from service.mapping import Mappings
from service.mapping.model import ValueSet, normalize_code
from service.screening.concepts import OBSERVATION_CONCEPTS
from service.screening.prefilter import line_filter, observation_codes, observation_pattern

CODES = frozenset({"2986-8", "14913-8", "89247-1", "la9622-7", "423740007"})
PATTERN = observation_pattern(CODES)


@st.composite
def code_like(draw: st.DrawFn) -> str:
    """A listed code as a sloppy system might write it, or a near miss."""
    code = draw(st.sampled_from(sorted(CODES)))
    chars = []
    for char in code:
        chars.append(char.upper() if draw(st.booleans()) else char)
        chars.append(draw(st.sampled_from(["", "", "", ".", "..", " ", "x"])))
    text = "".join(chars)
    return (
        draw(st.sampled_from(["", " ", "\t", ". ", " ."]))
        + text
        + draw(st.sampled_from(["", " ", ".", ". ", " .", "9"]))
    )


@settings(max_examples=400, deadline=None)
@given(value=code_like() | st.text(alphabet="0123456789-. abcLA", max_size=12))
def test_the_pattern_matches_exactly_the_values_that_normalise_to_a_listed_code(
    value: str,
) -> None:
    assert PATTERN is not None
    line = b'{"code": {"coding": [{"code": "' + value.encode() + b'"}]}}'
    assert bool(PATTERN.search(line)) == (normalize_code(value) in CODES)


def test_the_bundled_mappings_select_observations_by_code(mappings: Mappings) -> None:
    selection = line_filter(mappings)
    assert selection.observation_codes is not None
    assert "2986-8" in selection.observation_codes  # total testosterone
    assert "8867-4" not in selection.observation_codes  # heart rate: noise
    assert selection.observation_pattern is not None


@dataclass
class _PrefixMappings:
    """Mappings whose ECOG value set matches by prefix (a site's own local codes, say)."""

    real: Mappings

    def vs(self, name: str) -> ValueSet:
        found = self.real.vs(name)
        if name == "ecog":
            return ValueSet(name, "", found.exact, ((frozenset({"urn:local"}), "ecog-"),))
        return found


def test_a_prefix_rule_turns_the_code_selection_off(mappings: Mappings) -> None:
    assert "ecog" in OBSERVATION_CONCEPTS
    assert observation_codes(_PrefixMappings(mappings)) is None  # type: ignore[arg-type]


def test_codes_that_are_not_ascii_leave_every_line_to_the_value_by_value_check() -> None:
    assert observation_pattern(frozenset({"straße"})) is None
    assert observation_pattern(frozenset()) is None


def _observation_line(code: str, text: str) -> bytes:
    resource = {
        "resourceType": "Observation",
        "id": code.lower(),
        "status": "final",
        "subject": {"reference": "Patient/p1"},
        "code": {"coding": [{"system": "urn:local", "code": code}], "text": text},
    }
    return (json.dumps(resource, ensure_ascii=False) + "\n").encode()


def test_unmapped_observations_whose_words_are_near_misses_are_kept(
    mappings: Mappings, tmp_path: Path
) -> None:
    """An unmapped local code named 'Testosteron totaal' is read (its reason points at it), so
    the partition keeps it, in plain ASCII and accented; unrelated unmapped labs are dropped."""
    lines = [
        _observation_line("LAB123", "Testosteron totaal"),
        _observation_line("LAB124", "TESTOSTÉRONE TOTALE"),
        _observation_line("LAB125", "Natrium"),
        _observation_line("LAB126", "Hemoglobine"),
    ]
    export = tmp_path / "Observation.ndjson"
    export.write_bytes(b"".join(lines))
    (tmp_path / "Patient.ndjson").write_text(
        json.dumps({"resourceType": "Patient", "id": "p1"}) + "\n"
    )
    (record,) = NdjsonStream(tmp_path, line_filter=line_filter(mappings)).records()
    assert sorted(o["id"] for o in record.of_type("Observation")) == ["lab123", "lab124"]
    kept_texts = sorted(o["code"]["text"] for o in record.of_type("Observation"))
    assert kept_texts == ["TESTOSTÉRONE TOTALE", "Testosteron totaal"]

    pattern = line_filter(mappings).near_miss_pattern
    assert pattern is not None
    assert pattern.search(lines[0]) and not pattern.search(lines[2])
