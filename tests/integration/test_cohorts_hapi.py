"""Cohorts on the HAPI peer (issue 14 item 1): "every man with prostate cancer" as a search
cohort holds exactly the fixture men with a prostate cancer Condition; a Group cohort holds
the Group's patients; a refresh finds a man whose diagnosis arrived since, and queues him.

Other tests of the session add cloned patients to the same server, so only the fixture
patients (ids `fx-...`) are compared exactly.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.cohorts import Cohorts, condition_search
from service.fhir.client import FhirClient
from service.fhir.server_source import ServerSource
from service.mapping import Mappings
from service.runtime import PatientSourceAdapter
from service.settings import DEFAULT_RUN_SEARCH_PARAMS
from service.store import Store, create_store
from tests.conftest import FIXTURES
from tests.integration.conftest import LoadedPeer
from tests.integration.helpers import cloned_fixture

pytestmark = pytest.mark.parametrize("fhir_peer", ["hapi"], indirect=True)


@pytest.fixture
def client(loaded_peer: LoadedPeer) -> Iterator[FhirClient]:
    client = FhirClient(loaded_peer.base_url)
    yield client
    client.close()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = create_store(f"sqlite:///{tmp_path / 'cohorts.sqlite3'}")
    store.migrate()
    yield store
    store.close()


@pytest.fixture
def cohorts(client: FhirClient, store: Store, mappings: Mappings) -> Cohorts:
    source = PatientSourceAdapter(ServerSource(client, mappings))
    return Cohorts(store, source, DEFAULT_RUN_SEARCH_PARAMS)


def _men_with(case: str, mappings: Mappings) -> bool:
    """Whether the fixture's Patient is male with a Condition coded in the prostate cancer
    value set, compared as the server compares tokens (exact system and code)."""
    wanted = {f"{system}|{code}" for system, code in mappings.vs("prostate-cancer").search_codes}
    resources = [
        e["resource"] for e in json.loads((FIXTURES / f"{case}.json").read_text())["entry"]
    ]
    male = any(r["resourceType"] == "Patient" and r.get("gender") == "male" for r in resources)
    return male and any(
        f"{coding.get('system')}|{coding.get('code')}" in wanted
        for r in resources
        if r["resourceType"] == "Condition"
        for coding in (r.get("code") or {}).get("coding", [])
    )


def _fixture_members(members: list[str]) -> set[str]:
    return {m for m in members if m.startswith("Patient/fx-")}


def test_every_man_with_prostate_cancer(
    loaded_peer: LoadedPeer, cohorts: Cohorts, store: Store, mappings: Mappings
) -> None:
    expected = {f"Patient/fx-{case}" for case in loaded_peer.cases if _men_with(case, mappings)}
    others = {f"Patient/fx-{case}" for case in loaded_peer.cases} - expected
    assert expected and others  # the fixtures hold both, or the test says nothing

    search = condition_search(mappings.vs("prostate-cancer"), "male")
    info = cohorts.define("prostate", cohorts.definition(search=search))

    members = store.cohort_members("prostate")
    assert info.kind == "search" and info.members == len(members)
    assert _fixture_members(members) == expected
    assert all(store.in_population(patient) for patient in expected)
    assert not any(store.in_population(patient) for patient in others)
    assert store.depth() == len(members)  # every one of them joined: queued for a screen


def test_a_group_cohort_and_a_refresh(
    loaded_peer: LoadedPeer, client: FhirClient, cohorts: Cohorts, store: Store, mappings: Mappings
) -> None:
    one, two = (f"Patient/fx-{case}" for case in loaded_peer.cases[:2])
    group_id = f"cohort-{uuid.uuid4().hex[:12]}"
    group = {
        "resourceType": "Group", "id": group_id, "type": "person", "actual": True,
        "member": [{"entity": {"reference": one}},
                   {"entity": {"reference": two}},
                   {"entity": {"reference": one}, "inactive": True}],
    }  # fmt: skip
    client.update(group)
    info = cohorts.define("registry", cohorts.definition(group=group_id))
    assert store.cohort_members("registry") == sorted([one, two])
    assert info.kind == "group" and info.members == 2

    search = condition_search(mappings.vs("prostate-cancer"), "male")
    cohorts.define("prostate", cohorts.definition(search=search))
    before = set(store.cohort_members("prostate"))
    newcomer = f"cohort-{uuid.uuid4().hex[:12]}"
    client.transaction(cloned_fixture("base", newcomer), patient=f"Patient/{newcomer}")
    queued = store.depth()
    refreshed = cohorts.refresh("prostate")
    assert set(store.cohort_members("prostate")) - before == {f"Patient/{newcomer}"}
    assert refreshed.members == len(before) + 1
    assert store.depth() == queued + 1  # only the newcomer is queued
