"""How a view reaches the service: this app's settings, runtime and use cases.

Why a module of its own: the views used to import `runtime()` from app.py, which imports the
views to register them (a 7-file import circle). The app factory `install`s the three in
`current_app.extensions`; views and hooks read them here, and nothing under views/ imports
app.py (tests/unit/test_api_imports.py keeps it so).
"""

from __future__ import annotations

from typing import TypeVar

from flask import Flask, current_app

from service.runtime import Runtime
from service.settings import Settings
from service.usecases import ScreeningService

RUNTIME = "medcare_runtime"  # the key service/cli.py reads to close the runtime
SETTINGS = "medcare_settings"
SERVICE = "medcare_service"

T = TypeVar("T")


def install(app: Flask, settings: Settings, runtime: Runtime) -> None:
    app.extensions[RUNTIME] = runtime
    app.extensions[SETTINGS] = settings
    app.extensions[SERVICE] = ScreeningService(runtime)


def _get(key: str, kind: type[T]) -> T:
    value = current_app.extensions[key]
    assert isinstance(value, kind)
    return value


def runtime() -> Runtime:
    return _get(RUNTIME, Runtime)


def settings() -> Settings:
    return _get(SETTINGS, Settings)


def service() -> ScreeningService:
    """The use cases (service/usecases.py) the views call."""
    return _get(SERVICE, ScreeningService)
