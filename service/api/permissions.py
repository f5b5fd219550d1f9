"""What an authenticated caller may do: read results, start screens and runs, write back.

Authentication (service/api/security.py, run before every /v1 request) answers 401; this module
answers 403 when the caller is known but lacks the permission. Three permissions, each with a
configurable name (README "Permissions"):

- read: results, runs and their results, the changes feed;
- screen: start a screen or a run, cancel a run;
- writeback: a screen or run with `write_back: true` (which also needs screen).

A JWT carries them in a claim (default `scope`): a space-separated string (OAuth scopes) or a
list (`roles`, `scp`, `permissions`); a dotted name such as `realm_access.roles` follows nested
objects when no claim has that exact name. A static token grants what its entry lists, or
everything when it lists nothing. Development mode without authentication grants everything.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from functools import wraps
from typing import Any, TypeVar

from flask import g

from service.api.deps import settings as current_settings
from service.api.errors import ApiError
from service.api.security import Principal
from service.settings import Settings

F = TypeVar("F", bound=Callable[..., Any])


class Permission(enum.Enum):
    READ = "read"
    SCREEN = "screen"
    WRITEBACK = "writeback"
    REVIEW = "review"
    AUDIT = "audit"  # export the audit log (issue 15 item 7)


def permission_names(settings: Settings) -> dict[Permission, str]:
    return {
        Permission.READ: settings.permission_read,
        Permission.SCREEN: settings.permission_screen,
        Permission.WRITEBACK: settings.permission_writeback,
        Permission.REVIEW: settings.permission_review,
        Permission.AUDIT: settings.permission_audit,
    }


def claim_values(claims: Mapping[str, Any], claim: str) -> set[str]:
    """The strings of a permission claim: split on spaces when a string, items when a list."""
    value: Any = claims.get(claim)
    if value is None and "." in claim:
        value = claims
        for part in claim.split("."):
            value = value.get(part) if isinstance(value, Mapping) else None
    if isinstance(value, str):
        return set(value.split())
    if isinstance(value, list):
        return {item for item in value if isinstance(item, str)}
    return set()


def granted(principal: Principal, settings: Settings) -> set[Permission]:
    names = permission_names(settings)
    if principal.kind == "development":
        return set(Permission)
    if principal.kind == "token":
        if principal.grants is None:
            return set(Permission)
        return {p for p, name in names.items() if name in principal.grants}
    if principal.kind == "jwt":
        values = claim_values(principal.claims, settings.jwt_permission_claim)
        return {p for p, name in names.items() if name in values}
    return set()


def require(*needed: Permission) -> None:
    """403 (the API's error shape) unless the current caller holds every permission named."""
    settings = current_settings()
    principal: Principal | None = g.get("principal")
    have = granted(principal, settings) if principal is not None else set()
    missing = [p for p in needed if p not in have]
    if missing:
        names = permission_names(settings)
        raise ApiError(
            403,
            "forbidden",
            "this credential lacks the permission(s): " + ", ".join(names[p] for p in missing),
            {"missing": [names[p] for p in missing], "claim": settings.jwt_permission_claim},
        )


def requires(*needed: Permission) -> Callable[[F], F]:
    """View decorator: `require(...)` before the view (and its body parsing) runs."""

    def decorate(view: F) -> F:
        @wraps(view)
        def checked(*args: Any, **kwargs: Any) -> Any:
            require(*needed)
            return view(*args, **kwargs)

        return checked  # type: ignore[return-value]

    return decorate
