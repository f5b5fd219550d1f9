"""The settings, under the name callers have always imported (`from service.config import
Settings, ConfigError, settings_from_env`). They live in service/settings/."""

from service.settings import (
    BATCH_MODES,
    DEFAULT_DATABASE,
    DEFAULT_RUN_SEARCH_PARAMS,
    DEFAULT_SOURCE,
    REPO_ROOT,
    ConfigError,
    Settings,
    read_secret,
    settings_from_env,
)

__all__ = [
    "BATCH_MODES",
    "DEFAULT_DATABASE",
    "DEFAULT_RUN_SEARCH_PARAMS",
    "DEFAULT_SOURCE",
    "REPO_ROOT",
    "ConfigError",
    "Settings",
    "read_secret",
    "settings_from_env",
]
