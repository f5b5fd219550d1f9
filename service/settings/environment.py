"""Reading the settings from the environment: the one place that looks at `os.environ`.

Why one table: every MEDCARE_* variable is listed once below with the setting it fills and how
its text is read, so the README, the Dockerfile and this module can be checked against each
other, and every error names the variable (never its value, which may be a secret). An unset
or empty variable leaves the setting's default. Secrets may be given as NAME or, for Docker and
Kubernetes secrets, in the file NAME_FILE.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from service.settings.model import (
    BATCH_MODES,
    DEFAULT_SMART_SCOPE,
    SMART_ALGORITHMS,
    BasicAuthSettings,
    BearerAuthSettings,
    ConfigError,
    NoAuthSettings,
    Settings,
    SmartAuthSettings,
)

ENV_AUTH = "MEDCARE_FHIR_AUTH"
AUTH_KINDS = ("none", "basic", "bearer", "smart")


def environment() -> Mapping[str, str]:
    """The process environment (read here and nowhere else in service/)."""
    return os.environ


def read_secret(env: Mapping[str, str], name: str) -> str | None:
    """NAME from the environment, or the content of the file NAME_FILE; None when neither is set."""
    value = env.get(name)
    if value:
        return value
    path = env.get(f"{name}_FILE")
    if not path:
        return None
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"{name}_FILE: cannot read the file ({exc.strerror})") from exc


# -- how one variable's text becomes a value (each raises ConfigError naming the variable) ----


def _text(name: str, raw: str) -> str:
    return raw


def _bool(name: str, raw: str) -> bool:
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}: expected true or false")


def _whole(minimum: int) -> Callable[[str, str], int]:
    def parse(name: str, raw: str) -> int:
        try:
            value = int(raw)
        except ValueError as exc:
            raise ConfigError(f"{name}: expected a whole number") from exc
        if value < minimum:
            raise ConfigError(f"{name}: must be at least {minimum}")
        return value

    return parse


def _list(name: str, raw: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in raw.split(",") if item.strip())


def _batch(name: str, raw: str) -> str:
    value = raw.strip().lower() or "auto"
    if value not in BATCH_MODES:
        raise ConfigError(f"{name}: expected {', '.join(BATCH_MODES)}, not {value!r}")
    return value


def _date(name: str, raw: str) -> date | None:
    try:
        return date.fromisoformat(raw.strip()) if raw.strip() else None
    except ValueError as exc:
        raise ConfigError(f"{name}: expected a date YYYY-MM-DD") from exc


def _token_hashes(name: str, raw: str) -> tuple[str, ...]:
    """Digests (lower-cased) with their optional `:permission ...` lists kept as written."""
    entries = []
    for entry in raw.replace("\n", ",").split(","):
        if entry.strip():
            digest, sep, permissions = entry.strip().partition(":")
            entries.append(
                digest.strip().lower() + (sep + " ".join(permissions.split()) if sep else "")
            )
    return tuple(entries)


def _cds_issuers(name: str, raw: str) -> tuple[tuple[str, str], ...]:
    pairs = []
    for item in _list(name, raw):
        issuer, sep, jwks = item.partition("=")
        if not sep or not issuer or not jwks:
            raise ConfigError(f"{name}: expected issuer=jwks_url pairs, comma separated")
        pairs.append((issuer, jwks))
    return tuple(pairs)


@dataclass(frozen=True)
class Variable:
    """One MEDCARE_* variable: the flat setting it fills, how it is read, whether NAME_FILE
    may hold it."""

    name: str
    setting: str
    parse: Callable[[str, str], Any] = _text
    secret: bool = False


VARIABLES: tuple[Variable, ...] = (
    Variable("MEDCARE_ENV", "environment"),
    # fhir (its authentication: fhir_auth_from_env)
    Variable("MEDCARE_FHIR_BASE_URL", "fhir_base_url"),
    Variable("MEDCARE_TLS_VERIFY", "tls_verify", _bool),
    Variable("MEDCARE_TLS_CA_BUNDLE", "tls_ca_bundle"),
    Variable("MEDCARE_FHIR_BATCH", "fhir_batch", _batch),
    Variable("MEDCARE_HTTP_POOL_SIZE", "http_pool_size", _whole(1)),
    Variable("MEDCARE_FHIR_MAX_ANSWER_BYTES", "fhir_max_answer_bytes", _whole(1)),
    Variable("MEDCARE_FHIR_DEADLINE_S", "fhir_deadline_s", _whole(1)),
    # store
    Variable("MEDCARE_DATABASE_URL", "database_url", secret=True),
    Variable("MEDCARE_DB_POOL_SIZE", "db_pool_size", _whole(1)),
    Variable("MEDCARE_CLAIM_LEASE_S", "claim_lease_s", _whole(2)),
    Variable("MEDCARE_TODAY", "today", _date),
    # api
    Variable("MEDCARE_API_TOKEN_SHA256", "api_token_hashes", _token_hashes, secret=True),
    Variable("MEDCARE_JWT_ISSUER", "jwt_issuer"),
    Variable("MEDCARE_JWT_JWKS_URL", "jwt_jwks_url"),
    Variable("MEDCARE_JWT_AUDIENCE", "jwt_audience"),
    Variable("MEDCARE_CDS_ISSUERS", "cds_issuers", _cds_issuers),
    Variable("MEDCARE_CDS_AUDIENCE", "cds_audience"),
    Variable("MEDCARE_CDS_MAX_TOKEN_LIFETIME", "cds_max_token_lifetime_s", _whole(1)),
    Variable("MEDCARE_CDS_REQUIRE_DIAGNOSIS", "cds_require_diagnosis", _bool),
    Variable("MEDCARE_WEB_BASE_URL", "web_base_url"),
    Variable("MEDCARE_JWT_PERMISSION_CLAIM", "jwt_permission_claim"),
    Variable("MEDCARE_PERMISSION_READ", "permission_read"),
    Variable("MEDCARE_PERMISSION_SCREEN", "permission_screen"),
    Variable("MEDCARE_PERMISSION_WRITEBACK", "permission_writeback"),
    Variable("MEDCARE_PERMISSION_REVIEW", "permission_review"),
    Variable("MEDCARE_PERMISSION_AUDIT", "permission_audit"),
    Variable("MEDCARE_AUDIT_FHIR", "audit_fhir", _bool),
    Variable("MEDCARE_AUDIT_TRUSTED_PROXY", "audit_trusted_proxy", _bool),
    Variable("MEDCARE_RUN_SEARCH_PARAMS", "run_search_params", _list),
    Variable("MEDCARE_CORS_ORIGINS", "cors_origins", _list),
    Variable("MEDCARE_MAX_REQUEST_BYTES", "max_request_bytes", _whole(1)),
    Variable("MEDCARE_ALLOW_NO_AUTH", "allow_no_auth", _bool),
    Variable("MEDCARE_NOTIFY_URL", "notify_url"),
    Variable("MEDCARE_NOTIFY_SECRET", "notify_secret", secret=True),
    Variable("MEDCARE_NOTIFY_PAYLOAD", "notify_payload"),
    Variable("MEDCARE_OIDC_ISSUER", "oidc_issuer"),
    Variable("MEDCARE_OIDC_CLIENT_ID", "oidc_client_id"),
    Variable("MEDCARE_OIDC_CLIENT_SECRET", "oidc_client_secret", secret=True),
    Variable("MEDCARE_OIDC_ROLE_CLAIM", "oidc_role_claim"),
    Variable("MEDCARE_SESSION_SECRET", "session_secret", secret=True),
    # screening
    Variable("MEDCARE_MAPPINGS_DIR", "mappings_dir", lambda _name, raw: Path(raw)),
    Variable("MEDCARE_SOURCE_PATH", "source_path", lambda _name, raw: Path(raw)),
    Variable("MEDCARE_WRITE_BACK", "write_back", _bool),
    Variable("MEDCARE_WRITE_INELIGIBLE", "write_ineligible", _bool),
    Variable("MEDCARE_RUN_CONCURRENCY", "run_concurrency", _whole(1)),
    Variable("MEDCARE_EMBEDDED_WORKER", "embedded_worker", _bool),
    Variable("MEDCARE_RESCREEN_CONCURRENCY", "rescreen_concurrency", _whole(1)),
    Variable("MEDCARE_RESCREEN_DELAY_S", "rescreen_delay_s", _whole(0)),
    Variable("MEDCARE_SWEEP_INTERVAL_S", "sweep_interval_s", _whole(0)),
    Variable("MEDCARE_SWEEP_SKEW_S", "sweep_skew_s", _whole(0)),
    Variable("MEDCARE_SWEEP_MAX_AGE_S", "sweep_max_age_s", _whole(1)),
)


def settings_from_env(env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Settings from `env` (default: the process environment), then `overrides` (flat names:
    CLI flags) on top. Raises ConfigError naming the variable at fault."""
    env = environment() if env is None else env
    values: dict[str, Any] = {}
    for variable in VARIABLES:
        raw = read_secret(env, variable.name) if variable.secret else env.get(variable.name)
        if raw:
            value = variable.parse(variable.name, raw)
            if value is not None and value != ():
                values[variable.setting] = value
    values["fhir_auth"] = fhir_auth_from_env(env)
    return Settings(**{**values, **overrides})


def fhir_auth_from_env(
    env: Mapping[str, str],
) -> NoAuthSettings | BasicAuthSettings | BearerAuthSettings | SmartAuthSettings:
    """The authentication MEDCARE_FHIR_AUTH names, with what it needs from the environment.

    A missing secret stops start-up with a ConfigError naming the variable, rather than
    failing later on the first request with a bare 401.
    """
    kind = env.get(ENV_AUTH, "none").strip().casefold() or "none"
    if kind == "none":
        return NoAuthSettings()
    if kind == "basic":
        return BasicAuthSettings(
            username=_required(env, "MEDCARE_FHIR_USERNAME", kind),
            password=SecretStr(_secret(env, "MEDCARE_FHIR_PASSWORD", kind)),
        )
    if kind == "bearer":
        return BearerAuthSettings(token=SecretStr(_secret(env, "MEDCARE_FHIR_TOKEN", kind)))
    if kind == "smart":
        client_id = _required(env, "MEDCARE_SMART_CLIENT_ID", kind)
        key_file = Path(_required(env, "MEDCARE_SMART_PRIVATE_KEY_FILE", kind))
        key_id = _required(env, "MEDCARE_SMART_KEY_ID", kind)
        algorithm = env.get("MEDCARE_SMART_ALG", "").strip() or "RS384"
        if algorithm not in SMART_ALGORITHMS:
            raise ConfigError(
                f"MEDCARE_SMART_ALG: {algorithm!r} is not supported "
                f"(use {' or '.join(SMART_ALGORITHMS)})"
            )
        return SmartAuthSettings(
            client_id=client_id,
            private_key_file=key_file,
            key_id=key_id,
            algorithm=algorithm,  # type: ignore[arg-type]  # checked against SMART_ALGORITHMS
            scope=env.get("MEDCARE_SMART_SCOPE", "").strip() or DEFAULT_SMART_SCOPE,
            token_url=env.get("MEDCARE_SMART_TOKEN_URL", "").strip() or None,
        )
    raise ConfigError(f"{ENV_AUTH}: {kind!r} is not one of {', '.join(AUTH_KINDS)}")


def _required(env: Mapping[str, str], name: str, kind: str) -> str:
    value = env.get(name, "").strip()
    if not value:
        raise ConfigError(f"{ENV_AUTH}={kind} needs {name}")
    return value


def _secret(env: Mapping[str, str], name: str, kind: str) -> str:
    """A secret given as NAME or in the file NAME_FILE (Docker and Kubernetes secrets)."""
    value = (read_secret(env, name) or "").strip()
    if not value:
        raise ConfigError(f"{ENV_AUTH}={kind} needs {name} or {name}_FILE")
    return value
