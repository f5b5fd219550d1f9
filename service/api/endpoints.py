"""The decorators of an authenticated endpoint, stacked once in the order that matters.

Why: each /v1 view carried the same five to seven decorators (permission, arguments, response,
the documented 401/403 and its own errors), and their order is part of the security: the
permission is checked before the body is parsed, so a caller without it learns nothing, not
even which fields the body lacks.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from flask_smorest import Blueprint
from marshmallow import Schema

from service.api.errors import ErrorSchema
from service.api.permissions import Permission, requires

F = TypeVar("F", bound=Callable[..., Any])

ALWAYS = {401: "no valid credentials", 403: "the credential lacks the permission"}


def guarded(
    blp: Blueprint,
    permission: Permission,
    response: type[Schema],
    *,
    status: int = 200,
    args: type[Schema] | None = None,
    location: str = "json",
    errors: Mapping[int, str | None] | None = None,
) -> Callable[[F], F]:
    """`requires(permission)`, then `blp.arguments(args)`, `blp.response(status, response)`
    and the error answers for the OpenAPI document (401, 403, then `errors`: status to
    description, None for none), as if written one above the other on the view."""
    documented = {**ALWAYS, **(errors or {})}

    def decorate(view: F) -> F:
        decorated: Any = view
        for code, description in reversed(documented.items()):
            decorated = blp.alt_response(code, schema=ErrorSchema, description=description)(
                decorated
            )
        decorated = blp.response(status, response)(decorated)
        if args is not None:
            decorated = blp.arguments(args, location=location)(decorated)
        checked: F = requires(permission)(decorated)
        return checked

    return decorate
