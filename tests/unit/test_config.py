"""Settings from the environment, read once: the FHIR batch override reaches the client, or is
refused; errors name the variable; secrets from files; the CLI's client honours the same
settings as the service's, and its flags override the environment."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from urllib3.exceptions import InsecureRequestWarning

from service.cli import main
from service.config import ConfigError, Settings, settings_from_env
from service.fhir.client import FhirClient
from service.runtime import Runtime
from service.settings import VARIABLES, BearerAuthSettings
from tests.conftest import FIXTURES, REPO
from tests.security.tlsserver import self_signed, serving


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


# -- issue 13: one settings object, read once; one composition root ---------------------------


@pytest.mark.parametrize(
    ("variable", "bad"),
    [
        ("MEDCARE_HTTP_POOL_SIZE", "many"),
        ("MEDCARE_DB_POOL_SIZE", "0"),
        ("MEDCARE_CLAIM_LEASE_S", "1"),
        ("MEDCARE_TLS_VERIFY", "maybe"),
        ("MEDCARE_TODAY", "yesterday"),
        ("MEDCARE_CDS_ISSUERS", "no-pair-here"),
        ("MEDCARE_FHIR_AUTH", "kerberos"),
    ],
)
def test_a_bad_value_is_refused_naming_the_variable_not_the_value(variable: str, bad: str) -> None:
    with pytest.raises(ConfigError, match=f"^{variable}") as error:
        settings_from_env({variable: bad})
    assert bad not in str(error.value).removeprefix(variable) or bad == "kerberos"


def test_secrets_come_from_files_and_stay_out_of_reprs(tmp_path: Path) -> None:
    files = {
        "MEDCARE_DATABASE_URL": "sqlite:///" + str(tmp_path / "from-a-file.sqlite3"),
        "MEDCARE_API_TOKEN_SHA256": "ab" * 32,
        "MEDCARE_FHIR_TOKEN": "fhir-token-from-a-file",
    }
    env = {"MEDCARE_FHIR_AUTH": "bearer"}
    for name, value in files.items():
        (tmp_path / name).write_text(value + "\n")
        env[f"{name}_FILE"] = str(tmp_path / name)
    settings = settings_from_env(env)
    assert settings.store.database_url.get_secret_value() == files["MEDCARE_DATABASE_URL"]
    assert settings.database_url == files["MEDCARE_DATABASE_URL"]
    assert settings.api.token_hashes == ("ab" * 32,)
    assert isinstance(settings.fhir.auth, BearerAuthSettings)
    assert settings.fhir.auth.token.get_secret_value() == files["MEDCARE_FHIR_TOKEN"]
    shown = repr(settings) + str(settings)
    assert "from-a-file" not in shown and "fhir-token" not in shown
    # a file that cannot be read is named, its path and content are not
    with pytest.raises(ConfigError, match=r"^MEDCARE_FHIR_TOKEN_FILE: cannot read") as error:
        settings_from_env({**env, "MEDCARE_FHIR_TOKEN_FILE": str(tmp_path / "absent")})
    assert "absent" not in str(error.value)


def test_flat_names_and_sections_are_one_object() -> None:
    settings = Settings(fhir_base_url="https://f/r4", http_pool_size=3).with_overrides(
        fhir_batch="never", fhir_auth={"kind": "basic", "username": "u", "password": "pw"}
    )
    assert (settings.fhir.base_url, settings.fhir.pool_size, settings.fhir.batch) == (
        "https://f/r4", 3, "never")  # fmt: skip
    assert settings.http_pool_size == 3 and "pw" not in repr(settings)
    with pytest.raises(ConfigError, match="unknown setting"):
        settings.with_overrides(no_such_setting=1)
    with pytest.raises(ConfigError, match="pool_size"):
        Settings(http_pool_size=0)


def test_every_variable_is_documented_in_the_readme() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert [v.name for v in VARIABLES if v.name not in readme] == []


def test_only_the_settings_read_the_environment() -> None:
    """Issue 13 item 1: one reader of the service's settings. Outside service/settings only a
    library's own variable may be touched (prometheus_client reads PROMETHEUS_MULTIPROC_DIR
    itself), never a MEDCARE_* one."""
    readers = [
        str(path.relative_to(REPO))
        for path in (REPO / "service").rglob("*.py")
        if ("os.environ" in (text := path.read_text(encoding="utf-8")) or "getenv" in text)
        and path.parent.name != "settings"
        and ("MEDCARE_" in text or "PROMETHEUS_MULTIPROC_DIR" not in text)
    ]
    assert readers == []


def _spy_on_clients(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, object]]:
    made: list[dict[str, object]] = []
    original = FhirClient.__init__

    def spy(self: FhirClient, *args: object, **kwargs: object) -> None:
        made.append(kwargs)
        original(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(FhirClient, "__init__", spy)
    return made


def test_the_cli_client_honours_tls_verify_and_the_pool_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The bug issue 13 names: the CLI built its client apart and ignored MEDCARE_TLS_VERIFY and
    MEDCARE_HTTP_POOL_SIZE. Against a self-signed server, development with verification off
    reaches it; production refuses the setting before any request."""
    made = _spy_on_clients(monkeypatch)
    monkeypatch.setenv("MEDCARE_TLS_VERIFY", "false")
    monkeypatch.setenv("MEDCARE_HTTP_POOL_SIZE", "3")
    screen = ["screen", "--patient", "p1", "--no-store"]
    with serving(self_signed(tmp_path)) as server:
        monkeypatch.setenv("MEDCARE_ENV", "development")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", InsecureRequestWarning)
            main([*screen, "--fhir-base", server.url + "/fhir"])
        err = capsys.readouterr().err
        assert server.requests, err  # the TLS handshake succeeded: requests got through
        assert "TLS verification failed" not in err
        assert made and made[0]["verify"] is False and made[0]["pool_size"] == 3
        # production: the setting is refused, naming it, and the server is never asked
        monkeypatch.setenv("MEDCARE_ENV", "production")
        asked = len(server.requests)
        assert main([*screen, "--fhir-base", server.url + "/fhir"]) == 2
        assert "MEDCARE_TLS_VERIFY" in capsys.readouterr().err
        assert len(server.requests) == asked


def test_cli_flags_override_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MEDCARE_DATABASE_URL", f"sqlite:///{tmp_path / 'env.sqlite3'}")
    monkeypatch.setenv("MEDCARE_MAPPINGS_DIR", str(tmp_path / "no-mappings-here"))
    monkeypatch.setenv("MEDCARE_SOURCE_PATH", str(tmp_path / "no-patients-here"))
    code = main(
        ["screen", "--source", str(FIXTURES), "--patient", "fx-base", "--format", "json",
         "--mappings", str(REPO / "mappings"), "--database", f"sqlite:///{tmp_path / 'flag.sqlite3'}"]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0 and '"Patient/fx-base"' in out
    assert (tmp_path / "flag.sqlite3").exists() and not (tmp_path / "env.sqlite3").exists()
