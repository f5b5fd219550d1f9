"""Typed settings: defaults < environment (MEDCARE_*) < explicit overrides (tests, CLI).

Secrets (API token hashes, FHIR credentials) come from the environment or from files named in
the environment, never from the command line or a request. In production mode the service
refuses settings that would silently weaken security (no API authentication, TLS verification
off); development mode must be asked for explicitly and is announced loudly.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = REPO_ROOT / "fixtures" / "patients"
DEFAULT_DATABASE = REPO_ROOT / "var" / "medcare.sqlite3"


class ConfigError(Exception):
    """A setting that is missing or invalid; the message names the variable, never its value."""


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


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}: expected true or false")


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 1) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ConfigError(f"{name}: expected a whole number") from exc
    if value < minimum:
        raise ConfigError(f"{name}: must be at least {minimum}")
    return value


def _list(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in env.get(name, "").split(",") if item.strip())


@dataclass(frozen=True)
class Settings:
    """Every setting of the service; README "Configuration" documents each variable."""

    environment: str = "production"  # production | development
    fhir_base_url: str | None = None  # None: screen the local source instead of a server
    source_path: Path = DEFAULT_SOURCE
    # repr=False: a database URL may carry a password, `extra` an environment (secrets)
    database_url: str = field(default=f"sqlite:///{DEFAULT_DATABASE}", repr=False)
    mappings_dir: Path | None = None
    tls_ca_bundle: str | None = None
    tls_verify: bool = True
    fhir_batch: str = "auto"  # auto (the first batch is a probe) | always | never
    # limits on one FHIR answer: bytes after decompression, seconds for the whole answer
    fhir_max_answer_bytes: int = 50_000_000
    fhir_deadline_s: float = 120.0
    # API authentication: sha256 hex digests of accepted bearer tokens, and/or a JWT issuer
    api_token_hashes: tuple[str, ...] = ()
    jwt_issuer: str | None = None
    jwt_jwks_url: str | None = None
    jwt_audience: str | None = None
    # CDS Hooks: EHR issuers allowed to call, as "issuer=jwks_url" pairs
    cds_issuers: tuple[tuple[str, str], ...] = ()
    cds_audience: str | None = None
    cors_origins: tuple[str, ...] = ()
    max_request_bytes: int = 1_000_000
    write_back: bool = False
    write_ineligible: bool = False
    run_concurrency: int = 4
    db_pool_size: int = 8
    http_pool_size: int = 16
    allow_no_auth: bool = False  # development only; announced at start-up
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def development(self) -> bool:
        return self.environment == "development"

    def with_overrides(self, **overrides: Any) -> Settings:
        known = {f.name for f in fields(self)}
        unknown = set(overrides) - known
        if unknown:
            raise ConfigError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        return replace(self, **overrides)

    def check(self) -> Settings:
        """Refuse combinations that weaken security outside development mode."""
        if self.environment not in ("production", "development"):
            raise ConfigError("MEDCARE_ENV: expected production or development")
        if not self.development:
            if not self.tls_verify:
                raise ConfigError(
                    "MEDCARE_TLS_VERIFY: TLS verification cannot be turned off in production"
                )
            if self.allow_no_auth:
                raise ConfigError(
                    "MEDCARE_ALLOW_NO_AUTH: only allowed with MEDCARE_ENV=development"
                )
        if not (self.api_token_hashes or self.jwt_issuer or self.allow_no_auth):
            raise ConfigError(
                "no API authentication configured: set MEDCARE_API_TOKEN_SHA256 (or _FILE) or "
                "MEDCARE_JWT_ISSUER with MEDCARE_JWT_JWKS_URL; for local development only, "
                "MEDCARE_ENV=development with MEDCARE_ALLOW_NO_AUTH=true"
            )
        if self.jwt_issuer and not self.jwt_jwks_url:
            raise ConfigError("MEDCARE_JWT_JWKS_URL: required with MEDCARE_JWT_ISSUER")
        return self


# How to decide whether to read a patient in one batch (see FhirClient.supports_batch).
BATCH_MODES = ("auto", "always", "never")


def fhir_limits_from_env(env: Mapping[str, str]) -> tuple[int, float]:
    """MEDCARE_FHIR_MAX_ANSWER_BYTES (default 50 MB) and MEDCARE_FHIR_DEADLINE_S (120 s): the
    cap on one answer after decompression and the total time one request may take."""
    return (
        _int(env, "MEDCARE_FHIR_MAX_ANSWER_BYTES", 50_000_000),
        float(_int(env, "MEDCARE_FHIR_DEADLINE_S", 120)),
    )


def fhir_batch_from_env(env: Mapping[str, str]) -> str:
    """MEDCARE_FHIR_BATCH: auto (default), always or never (see FhirClient.supports_batch)."""
    value = (env.get("MEDCARE_FHIR_BATCH") or "auto").strip().lower()
    if value not in BATCH_MODES:
        raise ConfigError(f"MEDCARE_FHIR_BATCH: expected {', '.join(BATCH_MODES)}, not {value!r}")
    return value


def settings_from_env(env: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    hashes = read_secret(env, "MEDCARE_API_TOKEN_SHA256") or ""
    cds_pairs = []
    for item in _list(env, "MEDCARE_CDS_ISSUERS"):
        issuer, sep, jwks = item.partition("=")
        if not sep or not issuer or not jwks:
            raise ConfigError(
                "MEDCARE_CDS_ISSUERS: expected issuer=jwks_url pairs, comma separated"
            )
        cds_pairs.append((issuer, jwks))
    return Settings(
        environment=env.get("MEDCARE_ENV", "production"),
        fhir_base_url=env.get("MEDCARE_FHIR_BASE_URL") or None,
        source_path=Path(env.get("MEDCARE_SOURCE_PATH") or DEFAULT_SOURCE),
        database_url=read_secret(env, "MEDCARE_DATABASE_URL") or f"sqlite:///{DEFAULT_DATABASE}",
        mappings_dir=Path(env["MEDCARE_MAPPINGS_DIR"]) if env.get("MEDCARE_MAPPINGS_DIR") else None,
        tls_ca_bundle=env.get("MEDCARE_TLS_CA_BUNDLE") or None,
        tls_verify=_bool(env, "MEDCARE_TLS_VERIFY", True),
        fhir_batch=fhir_batch_from_env(env),
        fhir_max_answer_bytes=fhir_limits_from_env(env)[0],
        fhir_deadline_s=fhir_limits_from_env(env)[1],
        api_token_hashes=tuple(
            h.strip().lower() for h in hashes.replace("\n", ",").split(",") if h.strip()
        ),
        jwt_issuer=env.get("MEDCARE_JWT_ISSUER") or None,
        jwt_jwks_url=env.get("MEDCARE_JWT_JWKS_URL") or None,
        jwt_audience=env.get("MEDCARE_JWT_AUDIENCE") or None,
        cds_issuers=tuple(cds_pairs),
        cds_audience=env.get("MEDCARE_CDS_AUDIENCE") or None,
        cors_origins=_list(env, "MEDCARE_CORS_ORIGINS"),
        max_request_bytes=_int(env, "MEDCARE_MAX_REQUEST_BYTES", 1_000_000),
        write_back=_bool(env, "MEDCARE_WRITE_BACK", False),
        write_ineligible=_bool(env, "MEDCARE_WRITE_INELIGIBLE", False),
        run_concurrency=_int(env, "MEDCARE_RUN_CONCURRENCY", 4),
        db_pool_size=_int(env, "MEDCARE_DB_POOL_SIZE", 8),
        http_pool_size=_int(env, "MEDCARE_HTTP_POOL_SIZE", 16),
        allow_no_auth=_bool(env, "MEDCARE_ALLOW_NO_AUTH", False),
    )
