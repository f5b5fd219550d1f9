"""Population screens: worker processes give the same results, and one failure stays one."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor, wait
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from service import parallel
from service.fhir import ndjson_stream
from service.fhir.ndjson_stream import NdjsonStream
from service.fhir.record import PatientRecord
from service.mapping import Mappings
from service.population import Screened, screen_records, screen_stream
from service.screening.engine import Screener
from service.screening.prefilter import line_filter
from service.screening.result import ScreenResult
from tests.conftest import AS_OF, FIXTURES, SYNTHEA
from tests.ndjson_export import bundles_to_ndjson


class _FailsFor(Screener):
    """A screener with a bug that shows for one patient only."""

    def screen(self, record: PatientRecord, as_of: date) -> ScreenResult:
        if record.patient_id == "fx-base":
            raise RuntimeError("a bug")
        return super().screen(record, as_of)


def _by_patient(items: list[Screened]) -> dict[str, str | None]:
    return {
        i.patient_id: json.dumps(i.result.to_dict(), sort_keys=True) if i.result else i.error
        for i in items
    }


def _export(tmp_path: Path) -> Path:
    bundles = sorted(p for p in FIXTURES.glob("*.json") if not p.name.endswith(".expected.json"))
    return bundles_to_ndjson([*bundles, *sorted(SYNTHEA.glob("*.json"))], tmp_path / "export")


def test_two_workers_give_the_results_of_one(
    tmp_path: Path, mappings: Mappings, screener: Screener
) -> None:
    folder = _export(tmp_path)
    one = list(screen_stream(NdjsonStream(folder, line_filter(mappings)), screener, AS_OF))
    two = list(
        screen_stream(NdjsonStream(folder, line_filter(mappings)), screener, AS_OF, workers=2)
    )
    assert len(two) == len(one) > 140
    assert _by_patient(two) == _by_patient(one)
    assert all(item.result is not None for item in two)


def test_a_failing_screen_costs_only_that_patient(tmp_path: Path, mappings: Mappings) -> None:
    folder = _export(tmp_path)
    for workers in (1, 2):
        items = list(
            screen_stream(
                NdjsonStream(folder, line_filter(mappings)), _FailsFor(mappings), AS_OF, workers
            )
        )
        failed = [i for i in items if i.result is None]
        assert [(i.patient_id, i.error) for i in failed] == [("fx-base", "RuntimeError")], workers
        assert len(items) > 140


def test_problems_found_in_workers_reach_the_caller(
    tmp_path: Path, mappings: Mappings, screener: Screener
) -> None:
    folder = _export(tmp_path)
    with (folder / "Observation.ndjson").open("a") as handle:
        handle.write(
            '{"resourceType": "Observation", "code": {"coding": [{"code": "2986-8"}]}, '
            '"subject": {"reference": "Patient/fx-base"}, x\n'
        )
    stream = NdjsonStream(folder, line_filter(mappings))
    items = list(screen_stream(stream, screener, AS_OF, workers=2, patient_ids=["fx-base", "zz"]))
    assert [i.patient_id for i in items] == ["fx-base"]
    assert any("Observation.ndjson line" in p and "not valid JSON" in p for p in stream.problems)
    assert stream.problems[-1] == f"{folder}: no Patient with id 'zz'"


def test_records_screen_in_order(mappings: Mappings) -> None:
    records = [PatientRecord("a"), PatientRecord("fx-base"), PatientRecord("b")]
    items = list(screen_records(records, _FailsFor(mappings), AS_OF))
    assert [(i.patient_id, i.error) for i in items] == [
        ("a", None), ("fx-base", "RuntimeError"), ("b", None)
    ]  # fmt: skip


class _KillsItsWorker(Screener):
    """A screener whose worker process is killed (as the OOM killer would) on one patient."""

    parent = os.getpid()

    def screen(self, record: PatientRecord, as_of: date) -> ScreenResult:
        if record.patient_id == "fx-base" and os.getpid() != self.parent:
            os.kill(os.getpid(), signal.SIGKILL)
        return super().screen(record, as_of)


class _OneAtATime(ProcessPoolExecutor):
    """A pool that submits an item only when every earlier one has finished (or died).

    This fixes the moment a dead worker is noticed: the worker kills itself while computing
    item k, and `submit(k + 1)` waits until the pool has seen the death, so it is the submit
    that raises BrokenProcessPool, every time (under load or not).
    """

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        wait(getattr(self, "_submitted", []))
        future = super().submit(fn, *args, **kwargs)
        self._submitted = [*getattr(self, "_submitted", []), future]
        return future


def test_a_killed_worker_loses_nothing_and_hangs_nothing(
    tmp_path: Path, mappings: Mappings, screener: Screener, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker kills itself on fx-base's bucket (not the last one); the pool's death is
    seen at the next submit, the moment that crashed the screen about one run in two."""
    monkeypatch.setattr(parallel, "ProcessPoolExecutor", _OneAtATime)
    folder = _export(tmp_path)
    stream = NdjsonStream(folder, line_filter(mappings))
    items = list(screen_stream(stream, _KillsItsWorker(mappings), AS_OF, workers=2))
    one = list(screen_stream(NdjsonStream(folder, line_filter(mappings)), screener, AS_OF))
    assert _by_patient(items) == _by_patient(one)  # every patient once, with its result
    assert len(items) == len(one)
    assert any("a worker process died" in p for p in stream.problems)


_PARENT = os.getpid()


def _dies_on_three(item: int) -> int:
    """Item 3 kills its worker (as the OOM killer would); in the parent it is computed."""
    if item == 3 and os.getpid() != _PARENT:
        os.kill(os.getpid(), signal.SIGKILL)
    return item * item


def test_a_worker_death_seen_at_submit_loses_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parallel, "ProcessPoolExecutor", _OneAtATime)
    broken: list[bool] = []
    results = list(parallel.ordered_map(_dies_on_three, range(10), 2, lambda: broken.append(True)))
    assert results == [i * i for i in range(10)]
    assert broken == [True]


_RELEASE: Path | None = None  # set by the test below before the pool forks


def _dies_on_first_once_all_are_submitted(item: int) -> int:
    """Item 0 waits until the parent has submitted every item, then kills its worker: the
    death can only be seen while the parent waits for a result."""
    if item == 0 and os.getpid() != _PARENT:
        assert _RELEASE is not None
        while not _RELEASE.exists():
            os.sched_yield()
        os.kill(os.getpid(), signal.SIGKILL)
    return item + 100


class _ReleasesAfterLastSubmit(ProcessPoolExecutor):
    submits = 0

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future = super().submit(fn, *args, **kwargs)
        type(self).submits += 1
        if type(self).submits == 4 and _RELEASE is not None:
            _RELEASE.touch()
        return future


def test_a_worker_death_seen_at_a_result_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(parallel, "ProcessPoolExecutor", _ReleasesAfterLastSubmit)
    monkeypatch.setattr(_ReleasesAfterLastSubmit, "submits", 0)
    monkeypatch.setattr(f"{__name__}._RELEASE", tmp_path / "all-submitted")
    broken: list[bool] = []
    # 4 items = the window of 2 workers: all are submitted before the first result is awaited
    results = list(
        parallel.ordered_map(
            _dies_on_first_once_all_are_submitted, range(4), 2, lambda: broken.append(True)
        )
    )
    assert results == [100, 101, 102, 103]
    assert broken == [True]
    assert _ReleasesAfterLastSubmit.submits == 4


def _kill_on_second_task(task: Any) -> Any:
    """A partition task that dies in its worker (as the OOM killer would) on the second task."""
    if task.index == 1 and os.getpid() != _KillsItsWorker.parent:
        os.kill(os.getpid(), signal.SIGKILL)
    return _REAL_RUN_TASK(task)


_REAL_RUN_TASK = ndjson_stream._run_task


def test_large_files_are_partitioned_in_spans_by_the_workers(
    tmp_path: Path, mappings: Mappings, screener: Screener, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Spans cut files mid-way: every line is read once, problems keep their file's line
    numbers, and the screens equal the one-process ones; a worker dying in pass 1 too."""
    folder = _export(tmp_path)
    observations = folder / "Observation.ndjson"
    lines = observations.read_text().splitlines(keepends=True)
    bad = '{"resourceType": "Observation", "code": {"coding": [{"code": "2986-8"}]}, x\n'
    lines.insert(len(lines) - 3, bad)  # near the end of the file: in its last span
    observations.write_text("".join(lines))
    expected = list(screen_stream(NdjsonStream(folder, line_filter(mappings)), screener, AS_OF))
    monkeypatch.setattr(ndjson_stream, "_MIN_SPAN_BYTES", 50_000)
    for killer in (None, _kill_on_second_task):
        if killer is not None:
            monkeypatch.setattr(ndjson_stream, "_run_task", killer)
        stream = NdjsonStream(folder, line_filter(mappings))
        with stream.partitioned(workers=2) as partition:
            assert len(partition.spans) > 10 and partition.parts > 3
        items = list(screen_stream(stream, screener, AS_OF, workers=2))
        assert _by_patient(items) == _by_patient(expected)
        line = f"{observations} line {len(lines) - 3}: not valid JSON"
        assert sum(p.startswith(line) for p in stream.problems) == 2  # each partition saw it
        assert any("worker process died" in p for p in stream.problems) == (killer is not None)
