"""Server-mode measurements: ours (ServerSource) and the baseline, on the same server and patients.

Each measurement screens a fixed slice of patient ids at a given concurrency and records, for
the whole client process: wall time, HTTP requests and bytes (counted at the transport, so any
reader built on `requests` is counted the same way, whatever its internals), process CPU time
(HTTP client, JSON, models, mapping and rules: everything the client spends, the server runs in
another process) and, separately, the CPU time of `Screener.screen` alone.

"Ours" is whatever `service.fhir.server_source.ServerSource` is at the time of the run. It is
imported lazily: while it does not exist (or cannot be constructed) the row says why, and the
rest of the benchmark still runs.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Protocol

from requests import PreparedRequest, Response
from requests.adapters import HTTPAdapter

from bench.baseline import NaiveReader
from service.fhir.record import PatientRecord
from service.mapping import Mappings
from service.screening.engine import Screener


class Reader(Protocol):
    """Reads one patient's record from the server (one per worker thread)."""

    def read(self, patient_id: str) -> PatientRecord: ...

    def close(self) -> None: ...


class ReaderFactory(Protocol):
    """Makes a Reader per worker thread; `close()` releases what the readers share."""

    def __call__(self) -> Reader: ...

    def close(self) -> None: ...


class RequestCounter:
    """Counts every HTTP request (and response bytes) sent through requests' HTTPAdapter."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests = 0
        self.bytes = 0

    def reset(self) -> None:
        with self.lock:
            self.requests = 0
            self.bytes = 0

    @contextmanager
    def installed(self) -> Iterator[RequestCounter]:
        original = HTTPAdapter.send
        counter = self

        def send(
            adapter: HTTPAdapter, request: PreparedRequest, *args: Any, **kwargs: Any
        ) -> Response:
            response = original(adapter, request, *args, **kwargs)
            size = 0 if kwargs.get("stream") else len(response.content or b"")
            with counter.lock:
                counter.requests += 1
                counter.bytes += size
            return response

        HTTPAdapter.send = send  # type: ignore[method-assign,assignment]
        try:
            yield self
        finally:
            HTTPAdapter.send = original  # type: ignore[method-assign]


@dataclass
class Measurement:
    reader: str
    concurrency: int
    patients: int
    seconds: float
    requests: int
    bytes: int
    cpu_s: float
    screen_cpu_s: float
    errors: list[str] = field(default_factory=list)
    results: dict[str, str] = field(default_factory=dict, repr=False)
    cpu_split_s: dict[str, float] = field(default_factory=dict)

    @property
    def patients_per_s(self) -> float:
        return self.patients / self.seconds if self.seconds else 0.0

    @property
    def requests_per_patient(self) -> float:
        return self.requests / self.patients if self.patients else 0.0

    @property
    def cpu_ms_per_patient(self) -> float:
        return 1000 * self.cpu_s / self.patients if self.patients else 0.0

    @property
    def screen_cpu_ms_per_patient(self) -> float:
        return 1000 * self.screen_cpu_s / self.patients if self.patients else 0.0

    @property
    def kb_per_patient(self) -> float:
        return self.bytes / 1024 / self.patients if self.patients else 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "reader": self.reader,
            "concurrency": self.concurrency,
            "patients": self.patients,
            "seconds": round(self.seconds, 3),
            "patients_per_s": round(self.patients_per_s, 3),
            "requests_per_patient": round(self.requests_per_patient, 2),
            "kb_per_patient": round(self.kb_per_patient, 1),
            "cpu_ms_per_patient": round(self.cpu_ms_per_patient, 1),
            "screen_cpu_ms_per_patient": round(self.screen_cpu_ms_per_patient, 1),
            "cpu_ms_per_patient_by_stage": {
                stage: round(1000 * spent / self.patients, 1) if self.patients else 0.0
                for stage, spent in self.cpu_split_s.items()
            },
            "errors": self.errors[:5],
        }


def measure(
    name: str,
    make_reader: ReaderFactory,
    screener: Screener,
    patient_ids: Sequence[str],
    concurrency: int,
    as_of: date,
    counter: RequestCounter,
    budget_s: float = 300.0,
) -> Measurement:
    """Screen `patient_ids` with `concurrency` workers; patients not started by `budget_s` are
    skipped (the rate is over those done), so a slow reader cannot make the run unbounded."""
    local = threading.local()
    lock = threading.Lock()
    readers: list[Reader] = []
    screen_cpu = [0.0]
    results: dict[str, str] = {}
    errors: list[str] = []
    deadline = time.perf_counter() + budget_s

    def one(patient_id: str) -> None:
        if time.perf_counter() > deadline:
            return
        reader: Reader | None = getattr(local, "reader", None)
        if reader is None:
            reader = local.reader = make_reader()
            with lock:
                readers.append(reader)
        try:
            record = reader.read(patient_id)
            started = time.thread_time()
            result = screener.screen(record, as_of)
            spent = time.thread_time() - started
        except Exception as exc:  # one failed patient is reported, not fatal to the run
            with lock:
                errors.append(f"Patient/{patient_id}: {type(exc).__name__}: {str(exc)[:200]}")
            return
        with lock:
            screen_cpu[0] += spent
            results[patient_id] = json.dumps(result.to_dict(), sort_keys=True)

    counter.reset()
    wall0, cpu0 = time.perf_counter(), time.process_time()
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix=name) as pool:
        list(pool.map(one, patient_ids))
    seconds, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    split: dict[str, float] = {}
    for reader in readers:
        reader.close()
        # the baseline knows where its CPU went (JSON decode, model building); ours does not say
        stages = getattr(reader, "cpu", None)
        for stage, spent in (vars(stages) if stages is not None else {}).items():
            split[stage] = split.get(stage, 0.0) + spent
    return Measurement(
        reader=name,
        concurrency=concurrency,
        patients=len(results),
        seconds=seconds,
        requests=counter.requests,
        bytes=counter.bytes,
        cpu_s=cpu,
        screen_cpu_s=screen_cpu[0],
        errors=errors,
        results=results,
        cpu_split_s=split,
    )


class BaselineFactory:
    """A NaiveReader per worker thread (its own session, as a first integration would have)."""

    def __init__(self, base_url: str, page_size: int | None = None) -> None:
        self.base_url = base_url
        self.page_size = page_size

    def __call__(self) -> Reader:
        return NaiveReader(self.base_url, self.page_size)

    def close(self) -> None:
        pass


class _SharedSource:
    """Ours as a population run uses it: every worker calls the one ServerSource."""

    def __init__(self, source: Any) -> None:
        self.source = source

    def read(self, patient_id: str) -> PatientRecord:
        record: PatientRecord = self.source.record(patient_id)
        return record

    def close(self) -> None:
        pass


class OursFactory:
    """ServerSource over one shared FhirClient (the product's population path)."""

    def __init__(self, client: Any, source: Any) -> None:
        self.client = client
        self.reader = _SharedSource(source)

    def __call__(self) -> Reader:
        return self.reader

    def close(self) -> None:
        self.client.close()


def ours_factory(base_url: str, mappings: Mappings) -> OursFactory | str:
    """Ours, or the reason it cannot run (so the table says so and the rest still runs).

    THE LEAD WIRES THIS: adjust the constructor calls here if ServerSource's signature changes.
    """
    try:
        from service.compose import make_client, make_source
        from service.settings import Settings
    except ImportError as exc:
        return f"not available yet ({exc})"
    try:
        settings = Settings(fhir_base_url=base_url)
        client = make_client(settings)
        source = make_source(settings, mappings, client)
    except Exception as exc:  # any construction problem is reported in the table, not raised
        return f"not available ({type(exc).__name__}: {exc})"
    return OursFactory(client, source)
