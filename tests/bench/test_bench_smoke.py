"""Smoke run of the benchmark (issue #5): it still works, and what it measures is comparable.

Tiny populations, no timed assertions: figures live in bench/README.md, not in tests. What is
asserted is what would make the figures wrong: invalid or non-deterministic data, NDJSON and
Bundles disagreeing, the baseline and ours disagreeing on a real server, a broken `bench.run`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
from fhir.resources.R4B import get_fhir_model_class

from bench import run
from bench.api import api_latency
from bench.generate import Mix, generate, patient_id
from bench.load import bundles_generated, load
from bench.serverbench import BaselineFactory, RequestCounter, measure, ours_factory
from bench.servers import running
from service.fhir.local_source import LocalSource
from service.fhir.ndjson_stream import NdjsonStream
from service.mapping import Mappings
from service.population import screen_stream
from service.screening.engine import Screener
from service.screening.prefilter import line_filter

AS_OF = date(2026, 11, 26)
N = 3


def _results(screener: Screener, folder: Path) -> dict[str, str]:
    return {
        record.patient_id: json.dumps(screener.screen(record, AS_OF).to_dict(), sort_keys=True)
        for record in LocalSource(folder).records()
    }


def test_generated_resources_are_valid_r4_and_deterministic(tmp_path: Path) -> None:
    stats = generate(N, 7, tmp_path / "a", "ndjson")
    generate(N, 7, tmp_path / "b", "ndjson")
    assert stats.patients == N
    assert stats.resources > N * 100  # the noise is there
    for path in sorted((tmp_path / "a").glob("*.ndjson")):
        assert path.read_bytes() == (tmp_path / "b" / path.name).read_bytes(), path.name
        for line in path.read_text(encoding="utf-8").splitlines():
            resource = json.loads(line)
            get_fhir_model_class(resource["resourceType"]).model_validate(resource)


def test_ndjson_and_bundles_screen_identically(tmp_path: Path, screener: Screener) -> None:
    generate(N, 3, tmp_path / "ndjson", "ndjson")
    generate(N, 3, tmp_path / "bundles", "bundles")
    from_ndjson = _results(screener, tmp_path / "ndjson")
    assert sorted(from_ndjson) == [patient_id(3, i) for i in range(N)]
    assert from_ndjson == _results(screener, tmp_path / "bundles")


@pytest.mark.parametrize("workers", [1, 2])
def test_streamed_screen_is_the_local_source_screen(
    tmp_path: Path, screener: Screener, mappings: Mappings, workers: int
) -> None:
    """What the bench times as `ours` / `ours_w2` gives LocalSource's results, over several
    buckets (small ones, so that patients are spread over them as in a large export)."""
    generate(N, 4, tmp_path / "ndjson", "ndjson")
    (tmp_path / "scratch").mkdir()
    stream = NdjsonStream(
        tmp_path / "ndjson",
        line_filter(mappings),
        bucket_bytes=50_000,
        scratch_dir=tmp_path / "scratch",
    )
    streamed: dict[str, str] = {}
    for item in screen_stream(stream, screener, AS_OF, workers=workers):
        assert item.result is not None, item.error
        streamed[item.patient_id] = json.dumps(item.result.to_dict(), sort_keys=True)
    assert stream.problems == []
    assert streamed == _results(screener, tmp_path / "ndjson")
    assert list((tmp_path / "scratch").iterdir()) == []  # the buckets are gone


def test_quick_run_writes_results_and_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "results.json"
    assert run.main(["--quick", "--work", str(tmp_path / "work"), "--out", str(out)]) == 0
    results = json.loads(out.read_text())
    ndjson = results["ndjson"]
    assert ndjson["patients"] == 5
    assert ndjson["same_results"] is True
    for key in ("raw_parse_s", "ours_s", "ours_w2_s", "localsource_s", "ours_cpu_over_raw_cpu"):
        assert ndjson[key] > 0, key
    assert [row["n"] for row in results["memory"]] == [3, 6]
    for row in results["memory"]:
        assert set(row) >= {"raw", "ours", "ours_w2", "localsource"}
        assert not any(row[mode]["exceeded_cap"] for mode in ("raw", "ours", "ours_w2"))
        assert row["ours_w2"]["children_peak_mb"] > 0  # the workers were measured
        assert row["ours_w2"]["total_peak_mb"] >= row["ours_w2"]["peak_mb"]
    table = capsys.readouterr().out
    for row_name in (
        "NDJSON time ours / raw",
        "NDJSON time ours with 2 workers / raw",
        "NDJSON CPU ours / raw CPU",
        "NDJSON before (LocalSource) time / raw",
        "same results ours = w2 = LocalSource",
        "peak RSS, ours 2 workers (total)",
    ):
        assert row_name in table, row_name
    assert "prototype" not in table


@pytest.fixture(scope="module")
def medplum(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running("medplum", tmp_path_factory.mktemp("medplum")) as base_url:
        yield base_url


def test_baseline_and_ours_agree_on_a_real_server(
    medplum: str, screener: Screener, mappings: Mappings
) -> None:
    """Two small patients through load, baseline and ServerSource: same results, both counted."""
    load(medplum, bundles_generated(2, 5, AS_OF, Mix(noise=0.05)))
    ids = [patient_id(5, i) for i in range(2)]
    ours = ours_factory(medplum, mappings)
    assert not isinstance(ours, str), ours
    counter = RequestCounter()
    with counter.installed():
        base = measure("baseline", BaselineFactory(medplum), screener, ids, 2, AS_OF, counter)
        mine = measure("ours", ours, screener, ids, 2, AS_OF, counter)
    ours.close()
    assert base.errors == [] and mine.errors == []
    assert set(base.results) == set(ids)
    assert mine.results == base.results
    assert base.requests_per_patient >= 7  # Patient + six searches, at least
    assert 1 <= mine.requests < base.requests


def test_api_latency_runs_against_the_service(medplum: str, tmp_path: Path) -> None:
    """The service starts as in production (gunicorn, token auth) and both calls answer."""
    load(medplum, bundles_generated(1, 6, AS_OF, Mix(noise=0.05)))
    result = api_latency(medplum, [patient_id(6, 0)], AS_OF, tmp_path, 1, 1)
    assert result["available"], result.get("why")
    for key in ("screen", "latest_result"):
        assert result[key]["errors"] == 0, result[key]
        assert result[key]["calls"] == 20
