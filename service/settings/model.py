"""The settings model: one typed, frozen object in four sections, plus the production checks.

Why sections: the FHIR client, the store, the HTTP API and the screening each take their own
part (service/compose.py hands them out), so a reader sees at a glance which variable reaches
which component. Secrets are `SecretStr`: they never appear in a repr, a log line or an error.
The environment is read in one place (service/settings/environment.py); this module never
reads it, so tests build Settings directly.
"""

from __future__ import annotations

import hashlib
import ipaddress
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from service.settings.flat import FLAT_NAMES, FlatNames

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_SOURCE = REPO_ROOT / "fixtures" / "patients"
DEFAULT_DATABASE = REPO_ROOT / "var" / "medcare.sqlite3"
# How to decide whether to read a patient in one batch (see FhirClient.supports_batch).
BATCH_MODES = ("auto", "always", "never")
SMART_ALGORITHMS = ("RS384", "ES384")
# Read-only on clinical data; write on the three resources the screener writes back.
DEFAULT_SMART_SCOPE = (
    "system/Patient.read system/Observation.read system/Condition.read "
    "system/MedicationStatement.read system/MedicationRequest.read "
    "system/MedicationAdministration.read system/Procedure.read system/Medication.read "
    "system/Group.read system/ResearchStudy.* system/ResearchSubject.* system/Provenance.*"
)

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


# The SHA-256 of the empty token: what `sha256sum` of an unset variable gives. Never accepted,
# so a deployment script that forgot to set the token fails at start instead of letting in
# `Authorization: Bearer ` (README "The HTTP service").
EMPTY_TOKEN_DIGEST = hashlib.sha256(b"").hexdigest()


class ConfigError(Exception):
    """A setting that is missing or invalid; the message names the variable, never its value."""


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# -- FHIR server authentication: one of four kinds (MEDCARE_FHIR_AUTH) -------------------------


class NoAuthSettings(_Section):
    """Open sandboxes (a local HAPI or Medplum in development)."""

    kind: Literal["none"] = "none"


class BasicAuthSettings(_Section):
    kind: Literal["basic"] = "basic"
    username: str
    password: SecretStr


class BearerAuthSettings(_Section):
    kind: Literal["bearer"] = "bearer"
    token: SecretStr


class SmartAuthSettings(_Section):
    """SMART Backend Services; the key is a file, loaded (and checked) when the client is built."""

    kind: Literal["smart"] = "smart"
    client_id: str
    private_key_file: Path
    key_id: str
    algorithm: Literal["RS384", "ES384"] = "RS384"
    scope: str = DEFAULT_SMART_SCOPE
    token_url: str | None = None


FhirAuthSettings = Annotated[
    NoAuthSettings | BasicAuthSettings | BearerAuthSettings | SmartAuthSettings,
    Field(discriminator="kind"),
]


class FhirSettings(_Section):
    """The FHIR server screened and written back to; None base URL: screen local files."""

    base_url: str | None = None
    auth: FhirAuthSettings = NoAuthSettings()
    tls_verify: bool = True
    tls_ca_bundle: str | None = None
    batch: Literal["auto", "always", "never"] = "auto"  # the first batch is a probe in auto
    pool_size: Annotated[int, Field(ge=1)] = 16  # HTTP connections, shared by a run's threads
    # limits on one answer: bytes after decompression, seconds for the whole answer
    max_answer_bytes: Annotated[int, Field(ge=1)] = 52_428_800  # 50 MiB
    deadline_s: Annotated[float, Field(gt=0)] = 120.0

    @property
    def verify(self) -> bool | str:
        """What `requests` verifies against: the CA bundle, else on or (development) off."""
        return self.tls_ca_bundle or self.tls_verify


class StoreSettings(_Section):
    # a database URL may carry a password
    database_url: SecretStr = SecretStr(f"sqlite:///{DEFAULT_DATABASE}")
    pool_size: Annotated[int, Field(ge=1)] = 8
    # a run's claimed patient goes to another process after this long without a heartbeat
    claim_lease_s: Annotated[int, Field(ge=2)] = 60
    # the service's date (screens as of it are current, later ones refused); None: the clock's.
    # For tests and demos of fixtures written for one day (MEDCARE_TODAY)
    today: date | None = None


class ApiSettings(_Section):
    # sha256 hex digests of accepted bearer tokens (each optionally ":permission ..."),
    # and/or a JWT issuer
    token_hashes: tuple[str, ...] = ()
    jwt_issuer: str | None = None
    jwt_jwks_url: str | None = None
    jwt_audience: str | None = None
    # CDS Hooks: EHR issuers allowed to call, as (issuer, jwks_url) pairs
    cds_issuers: tuple[tuple[str, str], ...] = ()
    cds_audience: str | None = None
    cds_max_token_lifetime_s: Annotated[int, Field(ge=1)] = 300  # exp - iat at most this (+ leeway)
    # no card at all for a patient without a prostate cancer diagnosis (issue 15 item 8): a card
    # on every chart teaches clinicians to ignore it
    cds_require_diagnosis: bool = True
    # the public URL of the web pages (issue 15), for links to them from a CDS card
    web_base_url: str | None = None
    # permissions: the JWT claim that carries them and the name of each permission
    jwt_permission_claim: str = "scope"
    permission_read: str = "medcare.read"
    permission_screen: str = "medcare.screen"
    permission_review: str = "medcare.review"  # dispositions and manual answers (issue 15)
    permission_writeback: str = "medcare.writeback"
    # the audit log of every look at patient data (issue 15 item 7): who may export it, whether
    # each entry also goes to the FHIR server as an AuditEvent, and whether the client address
    # is the last X-Forwarded-For entry (only behind a proxy that sets it; else a forgeable claim)
    permission_audit: str = "medcare.audit"
    audit_fhir: bool = False
    audit_trusted_proxy: bool = False
    run_search_params: tuple[str, ...] = DEFAULT_RUN_SEARCH_PARAMS
    cors_origins: tuple[str, ...] = ()
    max_request_bytes: Annotated[int, Field(ge=1)] = 1_000_000
    allow_no_auth: bool = False  # development only; announced at start-up
    # FHIR Subscription notifications (issue 14): the URL the FHIR server posts to, the shared
    # secret it sends in Subscription.channel.header, and whether it sends the resources
    notify_url: str | None = None
    notify_secret: SecretStr | None = None
    notify_payload: Literal["id-only", "full"] = "full"
    # people signing in to the web pages (issue 15): the hospital's OpenID provider, this
    # service's client there, the claim that carries the role, the key of the session cookie
    oidc_issuer: str | None = None
    oidc_client_id: str | None = None
    oidc_client_secret: SecretStr | None = None
    oidc_role_claim: str = "medcare_role"
    session_secret: SecretStr | None = None


class ScreeningSettings(_Section):
    mappings_dir: Path | None = None  # None: the bundled mappings/
    source_path: Path = DEFAULT_SOURCE  # local files screened when there is no FHIR server
    write_back: bool = False
    write_ineligible: bool = False
    run_concurrency: Annotated[int, Field(ge=1)] = 4
    # re-screens of the queue (issue 14): `serve` runs them in its own processes unless this
    # is off (then `medcare-screen worker` does); patients at once per process; a burst of
    # changes for one patient within this many seconds of the first is one screen
    embedded_worker: bool = True
    rescreen_concurrency: Annotated[int, Field(ge=1)] = 2
    rescreen_delay_s: Annotated[int, Field(ge=0)] = 2
    # incremental sweeps (issue 14): every this many seconds (0: none), asking this much before
    # the watermark (late-visible writes); readiness reports a type not swept for max age
    # seconds (None: 3 x the interval)
    sweep_interval_s: Annotated[int, Field(ge=0)] = 300
    sweep_skew_s: Annotated[int, Field(ge=0)] = 120
    sweep_max_age_s: Annotated[int, Field(ge=1)] | None = None


SECTIONS = {
    "fhir": FhirSettings,
    "store": StoreSettings,
    "api": ApiSettings,
    "screening": ScreeningSettings,
}


class Settings(FlatNames, BaseModel):
    """Every setting of the service; README "Configuration" documents each variable.

    Built from sections (`Settings(fhir=FhirSettings(...))`) or, for brevity in tests and
    callers of before the sections, from the flat names of service/settings/flat.py
    (`Settings(fhir_base_url=..., database_url=...)`), which also read back as attributes.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    environment: str = "production"  # production | development
    fhir: FhirSettings = FhirSettings()
    store: StoreSettings = StoreSettings()
    api: ApiSettings = ApiSettings()
    screening: ScreeningSettings = ScreeningSettings()

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise ConfigError(_describe(exc)) from None

    @model_validator(mode="before")
    @classmethod
    def _route_flat_names(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        routed = {key: value for key, value in data.items() if key not in FLAT_NAMES}
        for key, value in data.items():
            if key in FLAT_NAMES:
                section, name = FLAT_NAMES[key]
                current = routed.get(section, {})
                if isinstance(current, BaseModel):
                    current = current.model_dump()
                routed[section] = {**current, name: value}
        return routed

    @property
    def development(self) -> bool:
        return self.environment == "development"

    def with_overrides(self, **overrides: Any) -> Settings:
        """A copy with some fields replaced, by flat name or whole section (CLI flags, tests)."""
        unknown = set(overrides) - set(FLAT_NAMES) - set(type(self).model_fields)
        if unknown:
            raise ConfigError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        current = {name: getattr(self, name) for name in type(self).model_fields}
        return Settings(**{**current, **overrides})

    def check_fhir(self) -> Settings:
        """What the CLI and the service both refuse: TLS verification off outside development."""
        if self.environment not in ("production", "development"):
            raise ConfigError("MEDCARE_ENV: expected production or development")
        if not self.development and not self.fhir.tls_verify:
            raise ConfigError(
                "MEDCARE_TLS_VERIFY: TLS verification cannot be turned off in production"
            )
        return self

    def check(self) -> Settings:
        """Refuse combinations that weaken security outside development mode (the service)."""
        self.check_fhir()
        api = self.api
        if any(entry.partition(":")[0] == EMPTY_TOKEN_DIGEST for entry in api.token_hashes):
            raise ConfigError(
                "MEDCARE_API_TOKEN_SHA256: a digest of the EMPTY token (the hash of an unset "
                "variable?): set a long random token and give its SHA-256"
            )
        if not self.development and api.allow_no_auth:
            raise ConfigError("MEDCARE_ALLOW_NO_AUTH: only allowed with MEDCARE_ENV=development")
        if not (api.token_hashes or api.jwt_issuer or api.allow_no_auth):
            raise ConfigError(
                "no API authentication configured: set MEDCARE_API_TOKEN_SHA256 (or _FILE) or "
                "MEDCARE_JWT_ISSUER with MEDCARE_JWT_JWKS_URL; for local development only, "
                "MEDCARE_ENV=development with MEDCARE_ALLOW_NO_AUTH=true"
            )
        if api.jwt_issuer and not api.jwt_jwks_url:
            raise ConfigError("MEDCARE_JWT_JWKS_URL: required with MEDCARE_JWT_ISSUER")
        if api.jwt_jwks_url and not api.jwt_issuer:
            raise ConfigError("MEDCARE_JWT_ISSUER: required with MEDCARE_JWT_JWKS_URL")
        if api.cds_issuers and not api.cds_audience:
            raise ConfigError(
                "MEDCARE_CDS_AUDIENCE: required with MEDCARE_CDS_ISSUERS (this service's "
                "CDS Hooks URL, e.g. https://host/cds-services/medcare-patient-view)"
            )
        if not self.development:
            if api.jwt_issuer and not api.jwt_audience:
                raise ConfigError("MEDCARE_JWT_AUDIENCE: required with MEDCARE_JWT_ISSUER")
            _require_https("MEDCARE_JWT_JWKS_URL", api.jwt_jwks_url)
            _require_https("MEDCARE_FHIR_BASE_URL", self.fhir.base_url)
            for _issuer, jwks_url in api.cds_issuers:
                _require_https("MEDCARE_CDS_ISSUERS", jwks_url)
        return self


def _describe(exc: ValidationError) -> str:
    """The first problem as 'field: what is wrong', without the value (it may be a secret)."""
    error = exc.errors(include_input=False, include_url=False)[0]
    where = ".".join(str(part) for part in error["loc"] if not isinstance(part, int))
    return f"setting {where or 'unknown'}: {error['msg']}"


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
