"""Rules medcare-2: a result decided by medcare-1 is a different result (criteria.md §8).

The rules version is part of the content fingerprint, so the next screen of unchanged data
under new rules is a change: it replaces the stored medcare-1 result, appears in the changes
feed with its new rules version, and is queued for writing back.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from service.mapping import Mappings
from service.screening.engine import Screener
from service.store.repository import create_store
from service.writeback.fingerprint import fingerprint
from tests.builders import SCT, concept, condition, record
from tests.conftest import AS_OF


def test_bundled_rules_are_medcare_2(mappings: Mappings) -> None:
    assert mappings.parameters.rules_version == "medcare-2"
    assert mappings.versions["parameters"] == "medcare-2"


def test_a_medcare_1_result_is_replaced_and_fed_as_a_rules_change(
    mappings: Mappings, tmp_path: Path
) -> None:
    data = record(condition(concept(SCT, "399490008", "Adenocarcinoma of prostate")))
    old_params = dataclasses.replace(mappings.parameters, rules_version="medcare-1")
    old = Screener(dataclasses.replace(mappings, parameters=old_params)).screen(data, AS_OF)
    new = Screener(mappings).screen(data, AS_OF)
    assert old.rules_version == "medcare-1" and new.rules_version == "medcare-2"
    assert fingerprint(old) != fingerprint(new)

    store = create_store(f"sqlite:///{tmp_path / 'r.sqlite3'}", today=AS_OF)
    store.migrate()
    try:
        patient = f"Patient/{data.patient_id}"
        first = store.record_patient_result(
            None, patient, old.to_dict(), fingerprint(old), write_back=True
        )
        again = store.record_patient_result(
            None, patient, old.to_dict(), fingerprint(old), write_back=True
        )
        assert first.changed and not again.changed  # same rules, same data: no change
        replaced = store.record_patient_result(
            None, patient, new.to_dict(), fingerprint(new), write_back=True
        )
        assert replaced.changed
        items, _ = store.changes(None, 10)
        assert [i["result"]["rules_version"] for i in items] == ["medcare-1", "medcare-2"]
        assert items[-1]["fingerprint"] == fingerprint(new)
    finally:
        store.close()
