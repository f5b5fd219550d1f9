"""Typed settings: defaults < environment (MEDCARE_*) < explicit overrides (tests, CLI).

Secrets (API token hashes, FHIR credentials) come from the environment or from files named in
the environment, never from the command line or a request. In production mode the service
refuses settings that would silently weaken security (no API authentication, TLS verification
off); development mode must be asked for explicitly and is announced loudly.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

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


# Run searches select cohorts, not people: the parameters a `POST /v1/runs` search (and the
# CLI's --search) may use unless MEDCARE_RUN_SEARCH_PARAMS says otherwise (README "Run
# searches"; service/fhir/cohort_search.py). Clinical codes and administrative lists, never
# names, birth dates, addresses, telecoms or identifiers (gender selects half a population).
DEFAULT_RUN_SEARCH_PARAMS = (
    "_id", "_lastUpdated", "_list", "_count", "_tag", "gender",
    "_has:Condition:*:code", "_has:Condition:*:clinical-status",
    "_has:Condition:*:verification-status", "_has:Condition:*:category",
    "_has:Observation:*:code", "_has:Observation:*:category", "_has:Procedure:*:code",
    "_has:MedicationStatement:*:code", "_has:MedicationRequest:*:code",
    "_has:MedicationAdministration:*:code", "_has:DiagnosticReport:*:code",
)  # fmt: skip


def _is_loopback(host: str) -> bool:
    """`localhost` or a loopback IP literal (127.0.0.0/8, ::1); never a name like 127.x.org."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _require_https(name: str, url: str | None) -> None:
    """Production sends tokens and patient data only over TLS; plain http only to loopback,
    where it never leaves the machine (a TLS-terminating sidecar, tests)."""
    if not url:
        return
    parsed = urlsplit(url)
    host = (parsed.hostname or "").lower()
    if parsed.scheme.lower() == "https" and host:
        return
    if parsed.scheme.lower() == "http" and _is_loopback(host):
        return
    raise ConfigError(f"{name}: must be an https:// URL in production")


def _token_entry(entry: str) -> str:
    """A token digest (lower-cased) with its optional `:permission ...` list kept as written."""
    digest, sep, permissions = entry.strip().partition(":")
    return digest.strip().lower() + (sep + " ".join(permissions.split()) if sep else "")


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
    fhir_max_answer_bytes: int = 52_428_800  # 50 MiB
    fhir_deadline_s: float = 120.0
    # API authentication: sha256 hex digests of accepted bearer tokens, and/or a JWT issuer
    api_token_hashes: tuple[str, ...] = ()
    jwt_issuer: str | None = None
    jwt_jwks_url: str | None = None
    jwt_audience: str | None = None
    # CDS Hooks: EHR issuers allowed to call, as "issuer=jwks_url" pairs
    cds_issuers: tuple[tuple[str, str], ...] = ()
    cds_audience: str | None = None
    cds_max_token_lifetime_s: int = 300  # CDS Hooks JWTs: exp - iat at most this (+ leeway)
    # API permissions: the JWT claim that carries them and the name of each permission
    jwt_permission_claim: str = "scope"
    permission_read: str = "medcare.read"
    permission_screen: str = "medcare.screen"
    permission_writeback: str = "medcare.writeback"
    run_search_params: tuple[str, ...] = DEFAULT_RUN_SEARCH_PARAMS
    cors_origins: tuple[str, ...] = ()
    max_request_bytes: int = 1_000_000
    write_back: bool = False
    write_ineligible: bool = False
    run_concurrency: int = 4
    db_pool_size: int = 8
    http_pool_size: int = 16
    allow_no_auth: bool = False  # development only; announced at start-up
    # the service's date (screens as of it are current, later ones refused); None: the clock's.
    # For tests and demos of fixtures written for one day (MEDCARE_TODAY)
    today: date | None = None
    # a run's claimed patient goes to another process after this long without a heartbeat
    claim_lease_s: int = 60
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
        if self.jwt_jwks_url and not self.jwt_issuer:
            raise ConfigError("MEDCARE_JWT_ISSUER: required with MEDCARE_JWT_JWKS_URL")
        if self.cds_issuers and not self.cds_audience:
            raise ConfigError(
                "MEDCARE_CDS_AUDIENCE: required with MEDCARE_CDS_ISSUERS (this service's "
                "CDS Hooks URL, e.g. https://host/cds-services/medcare-patient-view)"
            )
        if not self.development:
            if self.jwt_issuer and not self.jwt_audience:
                raise ConfigError("MEDCARE_JWT_AUDIENCE: required with MEDCARE_JWT_ISSUER")
            _require_https("MEDCARE_JWT_JWKS_URL", self.jwt_jwks_url)
            _require_https("MEDCARE_FHIR_BASE_URL", self.fhir_base_url)
            for _issuer, jwks_url in self.cds_issuers:
                _require_https("MEDCARE_CDS_ISSUERS", jwks_url)
        return self


# How to decide whether to read a patient in one batch (see FhirClient.supports_batch).
BATCH_MODES = ("auto", "always", "never")


def fhir_limits_from_env(env: Mapping[str, str]) -> tuple[int, float]:
    """MEDCARE_FHIR_MAX_ANSWER_BYTES (default 50 MiB) and MEDCARE_FHIR_DEADLINE_S (120 s): the
    cap on one answer after decompression and the total time one request may take."""
    return (
        _int(env, "MEDCARE_FHIR_MAX_ANSWER_BYTES", 52_428_800),
        float(_int(env, "MEDCARE_FHIR_DEADLINE_S", 120)),
    )


def fhir_batch_from_env(env: Mapping[str, str]) -> str:
    """MEDCARE_FHIR_BATCH: auto (default), always or never (see FhirClient.supports_batch)."""
    value = (env.get("MEDCARE_FHIR_BATCH") or "auto").strip().lower()
    if value not in BATCH_MODES:
        raise ConfigError(f"MEDCARE_FHIR_BATCH: expected {', '.join(BATCH_MODES)}, not {value!r}")
    return value


def run_search_params_from_env(env: Mapping[str, str]) -> tuple[str, ...]:
    """MEDCARE_RUN_SEARCH_PARAMS (comma separated) or the default cohort allow-list."""
    return _list(env, "MEDCARE_RUN_SEARCH_PARAMS") or DEFAULT_RUN_SEARCH_PARAMS


def today_from_env(env: Mapping[str, str]) -> date | None:
    """MEDCARE_TODAY: the service's date as YYYY-MM-DD (tests, demos); unset: the clock's."""
    raw = (env.get("MEDCARE_TODAY") or "").strip()
    if not raw:
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError as exc:
        raise ConfigError("MEDCARE_TODAY: expected a date YYYY-MM-DD") from exc


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
            _token_entry(h) for h in hashes.replace("\n", ",").split(",") if h.strip()
        ),
        jwt_issuer=env.get("MEDCARE_JWT_ISSUER") or None,
        jwt_jwks_url=env.get("MEDCARE_JWT_JWKS_URL") or None,
        jwt_audience=env.get("MEDCARE_JWT_AUDIENCE") or None,
        cds_issuers=tuple(cds_pairs),
        cds_audience=env.get("MEDCARE_CDS_AUDIENCE") or None,
        cds_max_token_lifetime_s=_int(env, "MEDCARE_CDS_MAX_TOKEN_LIFETIME", 300),
        jwt_permission_claim=env.get("MEDCARE_JWT_PERMISSION_CLAIM") or "scope",
        permission_read=env.get("MEDCARE_PERMISSION_READ") or "medcare.read",
        permission_screen=env.get("MEDCARE_PERMISSION_SCREEN") or "medcare.screen",
        permission_writeback=env.get("MEDCARE_PERMISSION_WRITEBACK") or "medcare.writeback",
        run_search_params=run_search_params_from_env(env),
        cors_origins=_list(env, "MEDCARE_CORS_ORIGINS"),
        max_request_bytes=_int(env, "MEDCARE_MAX_REQUEST_BYTES", 1_000_000),
        write_back=_bool(env, "MEDCARE_WRITE_BACK", False),
        write_ineligible=_bool(env, "MEDCARE_WRITE_INELIGIBLE", False),
        run_concurrency=_int(env, "MEDCARE_RUN_CONCURRENCY", 4),
        db_pool_size=_int(env, "MEDCARE_DB_POOL_SIZE", 8),
        http_pool_size=_int(env, "MEDCARE_HTTP_POOL_SIZE", 16),
        allow_no_auth=_bool(env, "MEDCARE_ALLOW_NO_AUTH", False),
        today=today_from_env(env),
        claim_lease_s=_int(env, "MEDCARE_CLAIM_LEASE_S", 60, minimum=2),
    )
