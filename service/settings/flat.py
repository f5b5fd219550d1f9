"""The flat setting names callers used before the sections (`settings.fhir_base_url`).

Why keep them: the API, the tests and the benchmarks name settings this way in many places;
one table here maps each flat name to its section and field, for construction
(`Settings(database_url=...)`, `with_overrides(fhir_batch=...)`) and as read-only properties.
New code reads the sections (`settings.fhir.base_url`).
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from service.settings.model import (
        ApiSettings,
        FhirSettings,
        ScreeningSettings,
        StoreSettings,
    )

FLAT_NAMES: dict[str, tuple[str, str]] = {
    "fhir_base_url": ("fhir", "base_url"),
    "fhir_auth": ("fhir", "auth"),
    "tls_verify": ("fhir", "tls_verify"),
    "tls_ca_bundle": ("fhir", "tls_ca_bundle"),
    "fhir_batch": ("fhir", "batch"),
    "http_pool_size": ("fhir", "pool_size"),
    "fhir_max_answer_bytes": ("fhir", "max_answer_bytes"),
    "fhir_deadline_s": ("fhir", "deadline_s"),
    "database_url": ("store", "database_url"),
    "db_pool_size": ("store", "pool_size"),
    "claim_lease_s": ("store", "claim_lease_s"),
    "today": ("store", "today"),
    "api_token_hashes": ("api", "token_hashes"),
    "jwt_issuer": ("api", "jwt_issuer"),
    "jwt_jwks_url": ("api", "jwt_jwks_url"),
    "jwt_audience": ("api", "jwt_audience"),
    "cds_issuers": ("api", "cds_issuers"),
    "cds_audience": ("api", "cds_audience"),
    "cds_max_token_lifetime_s": ("api", "cds_max_token_lifetime_s"),
    "jwt_permission_claim": ("api", "jwt_permission_claim"),
    "permission_read": ("api", "permission_read"),
    "permission_screen": ("api", "permission_screen"),
    "permission_writeback": ("api", "permission_writeback"),
    "run_search_params": ("api", "run_search_params"),
    "cors_origins": ("api", "cors_origins"),
    "max_request_bytes": ("api", "max_request_bytes"),
    "allow_no_auth": ("api", "allow_no_auth"),
    "mappings_dir": ("screening", "mappings_dir"),
    "source_path": ("screening", "source_path"),
    "write_back": ("screening", "write_back"),
    "write_ineligible": ("screening", "write_ineligible"),
    "run_concurrency": ("screening", "run_concurrency"),
}


class FlatNames:
    """Read-only flat names over the sections of `Settings` (see FLAT_NAMES)."""

    if TYPE_CHECKING:
        fhir: FhirSettings
        store: StoreSettings
        api: ApiSettings
        screening: ScreeningSettings

    # fhir
    @property
    def fhir_base_url(self) -> str | None:
        return self.fhir.base_url

    @property
    def tls_verify(self) -> bool:
        return self.fhir.tls_verify

    @property
    def tls_ca_bundle(self) -> str | None:
        return self.fhir.tls_ca_bundle

    @property
    def fhir_batch(self) -> str:
        return self.fhir.batch

    @property
    def http_pool_size(self) -> int:
        return self.fhir.pool_size

    @property
    def fhir_max_answer_bytes(self) -> int:
        return self.fhir.max_answer_bytes

    @property
    def fhir_deadline_s(self) -> float:
        return self.fhir.deadline_s

    # store
    @property
    def database_url(self) -> str:
        return self.store.database_url.get_secret_value()

    @property
    def db_pool_size(self) -> int:
        return self.store.pool_size

    @property
    def claim_lease_s(self) -> int:
        return self.store.claim_lease_s

    @property
    def today(self) -> date | None:
        return self.store.today

    # api
    @property
    def api_token_hashes(self) -> tuple[str, ...]:
        return self.api.token_hashes

    @property
    def jwt_issuer(self) -> str | None:
        return self.api.jwt_issuer

    @property
    def jwt_jwks_url(self) -> str | None:
        return self.api.jwt_jwks_url

    @property
    def jwt_audience(self) -> str | None:
        return self.api.jwt_audience

    @property
    def cds_issuers(self) -> tuple[tuple[str, str], ...]:
        return self.api.cds_issuers

    @property
    def cds_audience(self) -> str | None:
        return self.api.cds_audience

    @property
    def cds_max_token_lifetime_s(self) -> int:
        return self.api.cds_max_token_lifetime_s

    @property
    def jwt_permission_claim(self) -> str:
        return self.api.jwt_permission_claim

    @property
    def permission_read(self) -> str:
        return self.api.permission_read

    @property
    def permission_screen(self) -> str:
        return self.api.permission_screen

    @property
    def permission_writeback(self) -> str:
        return self.api.permission_writeback

    @property
    def run_search_params(self) -> tuple[str, ...]:
        return self.api.run_search_params

    @property
    def cors_origins(self) -> tuple[str, ...]:
        return self.api.cors_origins

    @property
    def max_request_bytes(self) -> int:
        return self.api.max_request_bytes

    @property
    def allow_no_auth(self) -> bool:
        return self.api.allow_no_auth

    # screening
    @property
    def mappings_dir(self) -> Path | None:
        return self.screening.mappings_dir

    @property
    def source_path(self) -> Path:
        return self.screening.source_path

    @property
    def write_back(self) -> bool:
        return self.screening.write_back

    @property
    def write_ineligible(self) -> bool:
        return self.screening.write_ineligible

    @property
    def run_concurrency(self) -> int:
        return self.screening.run_concurrency
