"""Testosterone units and censored values (criteria.md §5)."""

from __future__ import annotations

import pytest

from service.mapping import Mappings
from service.screening.units import (
    UnreadableValue,
    is_above_castrate,
    is_castrate,
    read_measurement,
)
from tests.builders import total_testosterone


@pytest.mark.parametrize(
    ("value", "unit", "ng_dl"),
    [
        (20, "ng/dL", 20.0),
        (20, "ng%", 20.0),
        (0.3, "ng/mL", 30.0),
        (0.3, "ug/L", 30.0),
        (1.2, "nmol/L", 34.61),
        (1200, "pmol/L", 34.61),
        (300, "ng/L", 30.0),
        (300, "pg/mL", 30.0),
        (20, "ng/dl", 20.0),  # labs send lower case; UCUM is case-sensitive in principle
    ],
)
def test_every_unit_converts_to_ng_dl(
    mappings: Mappings, value: float, unit: str, ng_dl: float
) -> None:
    measured = read_measurement(total_testosterone(value, unit), mappings)
    assert measured is not None
    assert measured.ng_dl == pytest.approx(ng_dl, abs=0.01)


def test_unknown_unit_keeps_the_value_but_no_conversion(mappings: Mappings) -> None:
    measured = read_measurement(total_testosterone(3, "mg/dL"), mappings)
    assert measured is not None and measured.ng_dl is None and measured.unit == "mg/dL"


def test_unit_text_is_used_only_when_the_ucum_code_is_absent(mappings: Mappings) -> None:
    resource = total_testosterone(0.3, "ng/mL")
    resource["valueQuantity"] = {"value": 0.3, "unit": "ng/mL"}
    measured = read_measurement(resource, mappings)
    assert measured is not None and measured.unit_from == "unit" and measured.ng_dl == 30.0
    resource["valueQuantity"] = {"value": 0.3, "unit": "nonsense", "code": "ng/mL"}
    measured = read_measurement(resource, mappings)
    assert measured is not None and measured.unit_from == "code" and measured.ng_dl == 30.0


def test_describe_shows_original_and_converted(mappings: Mappings) -> None:
    measured = read_measurement(total_testosterone(1.2, "nmol/L"), mappings)
    assert measured is not None
    assert measured.describe() == "1.2 nmol/L (34.6 ng/dL)"
    plain = read_measurement(total_testosterone(20, "ng/dL"), mappings)
    assert plain is not None and plain.describe() == "20 ng/dL"


@pytest.mark.parametrize(
    ("text", "comparator", "ng_dl"),
    [
        ("<0.5 ng/mL", "<", 50.0),
        ("≤ 1.2 nmol/L", "<=", 34.61),
        ("25 ng/dL", None, 25.0),
        ("0,3 ng/mL", None, 30.0),
    ],
)
def test_value_string_is_parsed_like_a_quantity(
    mappings: Mappings, text: str, comparator: str | None, ng_dl: float
) -> None:
    resource = total_testosterone(1, "ng/dL")
    del resource["valueQuantity"]
    resource["valueString"] = text
    measured = read_measurement(resource, mappings)
    assert measured is not None and measured.comparator == comparator
    assert measured.ng_dl == pytest.approx(ng_dl, abs=0.01)


@pytest.mark.parametrize("text", ["undetectable", "see comment", "12"])
def test_unparseable_value_string_is_unreadable(mappings: Mappings, text: str) -> None:
    resource = total_testosterone(1, "ng/dL")
    del resource["valueQuantity"]
    resource["valueString"] = text
    with pytest.raises(UnreadableValue):
        read_measurement(resource, mappings)


def test_no_value_is_none(mappings: Mappings) -> None:
    resource = total_testosterone(1, "ng/dL")
    del resource["valueQuantity"]
    resource["dataAbsentReason"] = {"text": "not performed"}
    assert read_measurement(resource, mappings) is None


@pytest.mark.parametrize(
    ("comparator", "value", "castrate", "above"),
    [
        (None, 49.99, True, False),
        (
            None,
            50,
            False,
            False,
        ),  # exactly 50: fails inclusion, does not trigger the exclusion (§6)
        (None, 50.01, False, True),
        ("<", 50, True, False),
        ("<=", 40, True, False),
        ("<", 60, None, None),  # "< 60" does not decide either way
        (">", 50, False, True),
        (">=", 50, False, None),  # could be exactly 50
        (">=", 60, False, True),
        (">", 30, None, None),
    ],
)
def test_censored_values(
    mappings: Mappings,
    comparator: str | None,
    value: float,
    castrate: bool | None,
    above: bool | None,
) -> None:
    resource = total_testosterone(value, "ng/dL")
    if comparator:
        resource["valueQuantity"]["comparator"] = comparator
    measured = read_measurement(resource, mappings)
    assert measured is not None
    assert is_castrate(measured, 50) is castrate
    assert is_above_castrate(measured, 50) is above


def test_threshold_rounding_does_not_tip_a_result(mappings: Mappings) -> None:
    # 50 ng/dL is 1.7336 nmol/L; the last digits of the factor must not make it "above"
    measured = read_measurement(total_testosterone(1.7336, "nmol/L"), mappings)
    assert measured is not None and measured.ng_dl == 50.0
    assert is_above_castrate(measured, 50) is False
