"""Every setting of the service, read once: a typed model in sections (model.py), the one
reader of the environment (environment.py) and the flat names of before the sections (flat.py).

The composition root (service/compose.py) turns a `Settings` into the service's parts; nothing
else in service/ reads the environment.
"""

from service.settings.environment import (
    VARIABLES,
    environment,
    fhir_auth_from_env,
    read_secret,
    settings_from_env,
)
from service.settings.model import (
    BATCH_MODES,
    DEFAULT_DATABASE,
    DEFAULT_RUN_SEARCH_PARAMS,
    DEFAULT_SMART_SCOPE,
    DEFAULT_SOURCE,
    REPO_ROOT,
    SMART_ALGORITHMS,
    ApiSettings,
    BasicAuthSettings,
    BearerAuthSettings,
    ConfigError,
    FhirAuthSettings,
    FhirSettings,
    NoAuthSettings,
    ScreeningSettings,
    Settings,
    SmartAuthSettings,
    StoreSettings,
)

__all__ = [
    "BATCH_MODES",
    "DEFAULT_DATABASE",
    "DEFAULT_RUN_SEARCH_PARAMS",
    "DEFAULT_SMART_SCOPE",
    "DEFAULT_SOURCE",
    "REPO_ROOT",
    "SMART_ALGORITHMS",
    "VARIABLES",
    "ApiSettings",
    "BasicAuthSettings",
    "BearerAuthSettings",
    "ConfigError",
    "FhirAuthSettings",
    "FhirSettings",
    "NoAuthSettings",
    "ScreeningSettings",
    "Settings",
    "SmartAuthSettings",
    "StoreSettings",
    "environment",
    "fhir_auth_from_env",
    "read_secret",
    "settings_from_env",
]
