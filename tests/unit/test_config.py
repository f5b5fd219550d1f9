"""Settings from the environment: the FHIR batch override reaches the client, or is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.config import ConfigError, Settings, settings_from_env
from service.runtime import Runtime


def test_fhir_batch_defaults_to_auto_and_accepts_overrides() -> None:
    assert settings_from_env({}).fhir_batch == "auto"
    assert settings_from_env({"MEDCARE_FHIR_BATCH": " Always "}).fhir_batch == "always"
    with pytest.raises(ConfigError, match="MEDCARE_FHIR_BATCH: expected auto, always, never"):
        settings_from_env({"MEDCARE_FHIR_BATCH": "yes"})


def test_the_runtime_client_uses_the_batch_setting(tmp_path: Path) -> None:
    settings = Settings(
        fhir_base_url="https://fhir.example.org/r4",
        fhir_batch="never",
        database_url=f"sqlite:///{tmp_path / 'r.sqlite3'}",
        api_token_hashes=("x",),
    )
    runtime = Runtime(settings, start_workers=False)
    try:
        assert runtime.client is not None and not runtime.client.supports_batch()
    finally:
        runtime.close()
