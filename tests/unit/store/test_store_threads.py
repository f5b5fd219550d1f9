"""Several threads on one SQLite file: writers queue (BEGIN IMMEDIATE) instead of failing."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from service.store.repository import Store
from tests.unit.store.helpers import AS_OF, body, save

WORKERS = 4
PATIENTS = 120


def test_workers_claim_disjoint_patients_and_record_without_lock_errors(store: Store) -> None:
    patients = [f"p{i:03d}" for i in range(PATIENTS)]
    run = store.create_run("ids", {"ids": patients}, AS_OF, patient_ids=patients)
    store.set_run_status(run.id, "running")

    def work() -> list[str]:
        mine: list[str] = []
        while batch := store.claim_pending(run.id, 7):
            for patient in batch:
                save(store, run.id, body(patient), write_back=True)
            mine += batch
        return mine

    with ThreadPoolExecutor(WORKERS) as pool:
        claimed = [
            patient for part in pool.map(lambda _: work(), range(WORKERS)) for patient in part
        ]

    assert sorted(claimed) == patients  # each exactly once
    assert store.complete_run(run.id)
    progress = store.run_progress(run.id)
    assert (progress["done"], progress["candidate"]) == (PATIENTS, PATIENTS)
    items, _ = store.changes(limit=1000)
    assert [i["seq"] for i in items] == list(range(1, PATIENTS + 1))
    assert store.outbox_counts()["pending"] == PATIENTS
