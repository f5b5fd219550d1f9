"""json_input: json.loads with a nesting limit and, on request, unique keys."""

from __future__ import annotations

import json

import pytest

from service.fhir.json_input import MAX_DEPTH, DuplicateKey, NestedTooDeeply, loads
from service.fhir.limits import depth_exceeds


def test_nesting_up_to_the_limit_is_read_beyond_it_refused() -> None:
    at_limit = "[" * MAX_DEPTH + "]" * MAX_DEPTH
    assert depth_exceeds(loads(at_limit), MAX_DEPTH) is False
    for text in ("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1), '{"a":' * 5000 + "1" + "}" * 5000):
        with pytest.raises(NestedTooDeeply, match=f"nested more than {MAX_DEPTH} levels deep"):
            loads(text)
        with pytest.raises(NestedTooDeeply):
            loads(text.encode())


def test_brackets_inside_strings_cost_a_walk_not_a_refusal() -> None:
    text = json.dumps({"text": "[" * 500})
    assert loads(text) == {"text": "[" * 500}
    assert loads("3") == 3


def test_duplicate_keys_are_refused_only_when_asked() -> None:
    assert loads('{"a": 1, "a": 2}') == {"a": 2}
    with pytest.raises(DuplicateKey, match="the key 'patient' appears twice") as caught:
        loads('{"x": {"patient": "a", "patient": "b"}}', unique_keys=True)
    assert caught.value.key == "patient"
    with pytest.raises(DuplicateKey, match=r"'kkk+\.\.\.'"):
        loads('{"' + "k" * 200 + '": 1, "' + "k" * 200 + '": 2}', unique_keys=True)
