"""The HTTP service: a versioned screening API, CDS Hooks, health and metrics (Flask)."""

from service.api.app import create_app

__all__ = ["create_app"]
