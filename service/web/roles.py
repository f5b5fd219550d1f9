"""The roles people have on the web pages, and what each may do.

Why a table: the role comes from the hospital's identity provider (a claim, MEDCARE_OIDC_ROLE_CLAIM)
and the pages ask "may this person read / record?", never "is this a coordinator?", so adding
a permission (dispositions, manual answers: issue 15 item 3) is one line here.
"""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    COORDINATOR = "coordinator"
    INVESTIGATOR = "investigator"
    READ_ONLY = "read-only"


class Permission(StrEnum):
    READ = "read"  # see the worklist and patient pages
    RECORD = "record"  # dispositions and manual answers (issue 15 item 3)


PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.COORDINATOR: frozenset({Permission.READ, Permission.RECORD}),
    Role.INVESTIGATOR: frozenset({Permission.READ, Permission.RECORD}),
    Role.READ_ONLY: frozenset({Permission.READ}),
}


def role_of(claim: object) -> Role | None:
    """The role a claim names (a string, or a list whose first known entry counts); None when
    it names none we know: such a person is refused with a clear page."""
    values = claim if isinstance(claim, list) else [claim]
    for value in values:
        if isinstance(value, str) and value in Role._value2member_map_:
            return Role(value)
    return None


def may(role: Role, permission: Permission) -> bool:
    return permission in PERMISSIONS[role]
