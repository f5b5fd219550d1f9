"""Schemathesis over the whole API (from its own /openapi.json): generated valid and invalid
requests for every operation, and stateful sequences that follow the Location of a new run.
Every answer must be documented (status, content type, body schema) and none may be a 5xx;
the API is checked to refuse requests without authentication as well.

The app runs in this process on the fixture patients (local files) and a fresh SQLite file.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from service.api import create_app
from service.runtime import Runtime
from tests.reliability import harness
from tests.reliability.conftest import Medplum

pytestmark = pytest.mark.timeout(240)

EXAMPLES = 40  # per operation and mode; CI keeps it short, the invariant is the same


def _app(folder: Path, fhir_base: str | None = None) -> tuple[Flask, Runtime]:
    app_settings = harness.settings_for(
        fhir_base, f"sqlite:///{folder / 'fuzz.sqlite3'}"
    ).with_overrides(source_path=harness.REPO / "fixtures" / "patients", run_concurrency=2)
    runtime = Runtime(app_settings)
    return create_app(app_settings, runtime), runtime


@pytest.fixture(scope="module")
def api_schema(
    medplum: Medplum, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[schemathesis.BaseSchema]:
    """The app on the Medplum peer (so write-back and searches are real), with its checks:
    all of Schemathesis' checks but `positive_data_acceptance`, which wants every
    schema-valid request accepted and cannot know that a cursor is opaque (400 bad-cursor) or
    that a run takes exactly one of patients / search / group (422)."""
    app, runtime = _app(tmp_path_factory.mktemp("fuzz"), medplum.base_url)
    loaded = schemathesis.openapi.from_wsgi("/openapi.json", app)
    loaded.config.checks.update(excluded_check_names=["positive_data_acceptance"])
    loaded.config.update(headers=harness.AUTH)  # known to the checks, so ignored_auth works
    yield loaded
    runtime.close()


_cases: dict[str, int] = {}


def _operations() -> list[tuple[str, bool]]:
    """(label, takes input) of every operation, read from a throwaway app (the test ids are
    fixed at collection); an operation without a body or query has no negative cases."""
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="medcare-fuzz-"))
    app, runtime = _app(folder)
    try:
        loaded = schemathesis.openapi.from_wsgi("/openapi.json", app)
        found = []
        for result in loaded.get_all_operations():
            operation = result.ok()
            # a free-text path parameter has no invalid values: only a body or a query does
            has_input = bool(operation.body) or any(
                p.location.value == "query" for p in operation.iter_parameters()
            )
            found.append((operation.label, has_input))
        return found
    finally:
        runtime.close()


@pytest.mark.parametrize(
    ("label", "mode"),
    [(label, mode) for label, has_input in _operations() for mode in GenerationMode
     if has_input or mode is GenerationMode.POSITIVE],
)  # fmt: skip
def test_every_operation(
    api_schema: schemathesis.BaseSchema, label: str, mode: GenerationMode
) -> None:
    """Schemathesis' own pytest plugin does not run under pytest 9 (Function._nodeid), so its
    strategies are driven with Hypothesis directly: the same cases, checks and shrinking."""
    (operation,) = [r.ok() for r in api_schema.get_all_operations() if r.ok().label == label]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    def check(case: schemathesis.Case) -> None:
        case.call_and_validate()
        _cases[label] = _cases.get(label, 0) + 1

    check()


def test_stateful_sequences(api_schema: schemathesis.BaseSchema) -> None:
    machine = api_schema.as_state_machine()
    steps = {"n": 0}

    class Sequences(machine):  # type: ignore[misc,valid-type]
        def before_call(self, case: schemathesis.Case) -> None:
            steps["n"] += 1

    Sequences.run(
        settings=settings(
            max_examples=25, stateful_step_count=6, deadline=None,
            suppress_health_check=list(HealthCheck),
        )
    )  # fmt: skip
    harness.record(
        "bad input: schemathesis over the API",
        operations_fuzzed=len(_cases), generated_requests=sum(_cases.values()),
        stateful_steps=steps["n"], server_errors=0, undocumented_answers=0,
    )  # fmt: skip
