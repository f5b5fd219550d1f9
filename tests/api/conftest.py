"""API test fixtures: the app over the fixture patients (local files) and a SQLite file."""

from __future__ import annotations

from collections.abc import Iterator
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

TOKEN = "test-token-0123456789abcdef"
# the fixtures are written for this day: screens as of it are current results (not look backs)
TODAY = date(2026, 11, 26)
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def make_settings(tmp_path: Path, **overrides: object) -> Settings:
    base = Settings(
        source_path=FIXTURES,
        database_url=f"sqlite:///{tmp_path / 'api.sqlite3'}",
        api_token_hashes=(token_digest(TOKEN),),
        run_concurrency=2,
        today=TODAY,
    )
    return base.with_overrides(**overrides)


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
