"""The flat setting names callers used before the sections (`settings.fhir_base_url`).

Why keep them: the API, the tests and the benchmarks name settings this way in many places.
Each flat name is declared once below as the section and field it stands for; that serves both
construction (`Settings(database_url=...)`, `with_overrides(fhir_batch=...)`, via FLAT_NAMES)
and reading (a typed, read-only attribute). New code reads the sections (`settings.fhir.base_url`).
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any, Generic, TypeVar, cast, overload

from pydantic import SecretStr

T = TypeVar("T")


class Flat(Generic[T]):
    """A read-only attribute that reads `field` of `section` (a secret URL as plain text: its
    callers pass it to SQLAlchemy, which hides the password when it prints one)."""

    def __init__(self, section: str, field: str) -> None:
        self.section = section
        self.field = field

    @overload
    def __get__(self, obj: None, owner: type) -> Flat[T]: ...

    @overload
    def __get__(self, obj: object, owner: type) -> T: ...

    def __get__(self, obj: object | None, owner: type) -> Flat[T] | T:
        if obj is None:
            return self
        value: Any = getattr(getattr(obj, self.section), self.field)
        return cast(T, value.get_secret_value() if isinstance(value, SecretStr) else value)


class FlatNames:
    """The flat names over the sections of `Settings`."""

    fhir_base_url = Flat[str | None]("fhir", "base_url")
    tls_verify = Flat[bool]("fhir", "tls_verify")
    tls_ca_bundle = Flat[str | None]("fhir", "tls_ca_bundle")
    fhir_batch = Flat[str]("fhir", "batch")
    http_pool_size = Flat[int]("fhir", "pool_size")
    fhir_max_answer_bytes = Flat[int]("fhir", "max_answer_bytes")
    fhir_deadline_s = Flat[float]("fhir", "deadline_s")
    database_url = Flat[str]("store", "database_url")
    db_pool_size = Flat[int]("store", "pool_size")
    claim_lease_s = Flat[int]("store", "claim_lease_s")
    today = Flat[date | None]("store", "today")
    api_token_hashes = Flat[tuple[str, ...]]("api", "token_hashes")
    jwt_issuer = Flat[str | None]("api", "jwt_issuer")
    jwt_jwks_url = Flat[str | None]("api", "jwt_jwks_url")
    jwt_audience = Flat[str | None]("api", "jwt_audience")
    cds_issuers = Flat[tuple[tuple[str, str], ...]]("api", "cds_issuers")
    cds_audience = Flat[str | None]("api", "cds_audience")
    cds_max_token_lifetime_s = Flat[int]("api", "cds_max_token_lifetime_s")
    cds_require_diagnosis = Flat[bool]("api", "cds_require_diagnosis")
    web_base_url = Flat[str | None]("api", "web_base_url")
    jwt_permission_claim = Flat[str]("api", "jwt_permission_claim")
    permission_read = Flat[str]("api", "permission_read")
    permission_screen = Flat[str]("api", "permission_screen")
    permission_writeback = Flat[str]("api", "permission_writeback")
    permission_review = Flat[str]("api", "permission_review")
    permission_audit = Flat[str]("api", "permission_audit")
    audit_fhir = Flat[bool]("api", "audit_fhir")
    audit_trusted_proxy = Flat[bool]("api", "audit_trusted_proxy")
    run_search_params = Flat[tuple[str, ...]]("api", "run_search_params")
    cors_origins = Flat[tuple[str, ...]]("api", "cors_origins")
    max_request_bytes = Flat[int]("api", "max_request_bytes")
    allow_no_auth = Flat[bool]("api", "allow_no_auth")
    notify_url = Flat[str | None]("api", "notify_url")
    notify_secret = Flat[str | None]("api", "notify_secret")
    notify_payload = Flat[str]("api", "notify_payload")
    oidc_issuer = Flat[str | None]("api", "oidc_issuer")
    oidc_client_id = Flat[str | None]("api", "oidc_client_id")
    oidc_client_secret = Flat[str | None]("api", "oidc_client_secret")
    oidc_role_claim = Flat[str]("api", "oidc_role_claim")
    session_secret = Flat[str | None]("api", "session_secret")
    mappings_dir = Flat[Path | None]("screening", "mappings_dir")
    source_path = Flat[Path]("screening", "source_path")
    write_back = Flat[bool]("screening", "write_back")
    write_ineligible = Flat[bool]("screening", "write_ineligible")
    run_concurrency = Flat[int]("screening", "run_concurrency")
    embedded_worker = Flat[bool]("screening", "embedded_worker")
    rescreen_concurrency = Flat[int]("screening", "rescreen_concurrency")
    rescreen_delay_s = Flat[int]("screening", "rescreen_delay_s")
    sweep_interval_s = Flat[int]("screening", "sweep_interval_s")
    sweep_skew_s = Flat[int]("screening", "sweep_skew_s")
    sweep_max_age_s = Flat[int | None]("screening", "sweep_max_age_s")


# flat name -> (section, field), for construction and overrides
FLAT_NAMES: dict[str, tuple[str, str]] = {
    name: (flat.section, flat.field)
    for name, flat in vars(FlatNames).items()
    if isinstance(flat, Flat)
} | {"fhir_auth": ("fhir", "auth")}  # to build with; read it as settings.fhir.auth
