"""API test fixtures: the app over the fixture patients (local files) and a SQLite file."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from service.api import create_app
from service.api.security import token_digest
from service.config import Settings
from service.runtime import Runtime
from tests.conftest import FIXTURES
from tests.integration.jwks import Issuer, jwks_server

TOKEN = "test-token-0123456789abcdef"
# the fixtures are written for this day: screens as of it are current results (not look backs)
TODAY = date(2026, 11, 26)
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CDS_URL = "/cds-services/medcare-patient-view"


def make_settings(tmp_path: Path, **overrides: object) -> Settings:
    base = Settings(
        source_path=FIXTURES,
        database_url=f"sqlite:///{tmp_path / 'api.sqlite3'}",
        api_token_hashes=(token_digest(TOKEN),),
        run_concurrency=2,
        today=TODAY,
    )
    return base.with_overrides(**overrides)


@contextmanager
def cds_app(tmp_path: Path) -> Iterator[tuple[FlaskClient, Issuer, str]]:
    """A development app that trusts a stand-in EHR for CDS Hooks calls: its test client, the
    EHR (which signs the calls' JWTs) and the audience those must name. The app's runtime is
    closed before the EHR stops, as a test that set this up by hand did."""
    with jwks_server() as ehr:
        audience = "https://medcare.example.org" + CDS_URL
        settings = make_settings(
            tmp_path, environment="development", cds_issuers=((ehr.issuer, ehr.jwks_url),),
            cds_audience=audience,
        )  # fmt: skip
        runtime = Runtime(settings)
        try:
            yield create_app(settings, runtime).test_client(), ehr, audience
        finally:
            runtime.close()


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Flask]:
    settings = make_settings(tmp_path)
    runtime = Runtime(settings)
    application = create_app(settings, runtime)
    yield application
    runtime.close()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()
