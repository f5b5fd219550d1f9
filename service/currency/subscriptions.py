"""The FHIR R4 Subscriptions the service needs, and keeping them in place on the server.

Why from the read plan: a Subscription is only worth its notifications when the change it
reports can change a result, and the read plan is the one statement of what a screen reads
(read_plan.py). So there is one rest-hook Subscription per resource type the plan reads, with
the plan's Observation codes as a `code=` token list (a new blood pressure must not wake a
screen), plus one on Patient (a birth date or a gender decides criteria too). Medication, read
only through `_include`, names no patient and is left to the sweeps.

Why deterministic ids and a tag: `ensure` must be idempotent and must never touch anybody
else's Subscriptions on a shared server. Each of ours is `Subscription/medcare-<owner>-<type>`
(PUT by id: HAPI makes no new version when nothing changed) and carries a `meta.tag` with the
owner, so the ones a smaller plan no longer needs are found and deleted; a Subscription
without our tag is never written, even if its id looks like ours.

The shared secret travels in `Subscription.channel.header` (that is where R4 puts it) and so
sits in the resources built here: they are never logged, and `HookSettings` hides it in repr.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from service.fhir.client import FhirClient
from service.fhir.errors import FhirNotFound
from service.read_plan import ReadPlan, token_list

Resource = dict[str, Any]
Payload = Literal["id-only", "full"]

OWNER_TAG_SYSTEM: Final = "https://medcare-screen.org/fhir/CodeSystem/subscription-owner"
FHIR_JSON: Final = "application/fhir+json"
REASON: Final = "MEDCARE Screen: re-screen a patient when data a screen reads changes"
# Types that are not in the read plan's per-patient reads but whose changes decide a result.
EXTRA_TYPES: Final = ("Patient",)
_OWNER = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,22}[a-z0-9])?")
# A status HAPI gives a Subscription once it works; "requested" is what we ask for.
_WORKING: Final = frozenset({"requested", "active"})


class ForeignSubscription(ValueError):
    """One of our ids is held by a Subscription without our owner tag."""


@dataclass(frozen=True)
class HookSettings:
    """Where and how the FHIR server is to notify us.

    `endpoint` is the service's notification URL as the FHIR server reaches it. With
    `payload` "full" the server sends each changed resource (HAPI: PUT endpoint/Type/id);
    with "id-only" it sends an empty POST, so each id-only Subscription gets its own
    `endpoint/Type` and the notification at least names the type to sweep.
    `header_name` "Authorization" sends `Bearer <secret>`; any other name sends the secret
    as the header's value. `owner` tells apart several services on one FHIR server.
    """

    endpoint: str
    secret: str = field(repr=False)
    payload: Payload = "full"
    header_name: str = "Authorization"
    owner: str = "default"

    def __post_init__(self) -> None:
        if not self.endpoint.startswith(("http://", "https://")):
            raise ValueError("the notification endpoint must be an http(s) URL")
        if not self.secret or any(ch in self.secret for ch in "\r\n"):
            raise ValueError("the notification secret must be a non-empty single line")
        if not re.fullmatch(r"[A-Za-z0-9-]{1,64}", self.header_name):
            raise ValueError(f"not a header name: {self.header_name!r}")
        if self.payload not in ("id-only", "full"):
            raise ValueError(f"payload: expected 'id-only' or 'full', not {self.payload!r}")
        if not _OWNER.fullmatch(self.owner):
            raise ValueError("owner: 1-24 lower-case letters, digits and inner hyphens")

    def header_value(self) -> str:
        """What the server is to send in `header_name` (the endpoint compares it)."""
        if self.header_name.lower() == "authorization":
            return f"Bearer {self.secret}"
        return self.secret

    def header(self) -> str:
        """The `channel.header` line, as R4 writes it: 'Name: value'."""
        return f"{self.header_name}: {self.header_value()}"


def subscription_types(plan: ReadPlan) -> list[tuple[str, str]]:
    """(resource type, criteria) of every Subscription the plan needs, in the plan's order."""
    wanted: list[tuple[str, str]] = []
    for read in plan.reads:
        criteria = f"{read.resource_type}?"
        if read.codes is not None:
            criteria += "code=" + token_list(read.codes)
        wanted.append((read.resource_type, criteria))
    planned = {resource_type for resource_type, _ in wanted}
    wanted += [(extra, f"{extra}?") for extra in EXTRA_TYPES if extra not in planned]
    return wanted


def subscription_id(owner: str, resource_type: str) -> str:
    """`medcare-<owner>-<type>`: a valid FHIR id (at most 64 characters) for each of ours."""
    return f"medcare-{owner}-{resource_type.lower()}"


def desired_subscriptions(plan: ReadPlan, hook: HookSettings) -> list[Resource]:
    """The Subscription resources the plan needs, as they are to be PUT."""
    return [
        _subscription(resource_type, criteria, hook)
        for resource_type, criteria in subscription_types(plan)
    ]


def _subscription(resource_type: str, criteria: str, hook: HookSettings) -> Resource:
    channel: Resource = {"type": "rest-hook", "header": [hook.header()]}
    if hook.payload == "full":
        channel["endpoint"] = hook.endpoint
        channel["payload"] = FHIR_JSON
    else:
        channel["endpoint"] = f"{hook.endpoint.rstrip('/')}/{resource_type}"
    return {
        "resourceType": "Subscription",
        "id": subscription_id(hook.owner, resource_type),
        "meta": {"tag": [{"system": OWNER_TAG_SYSTEM, "code": hook.owner}]},
        "status": "requested",
        "reason": REASON,
        "criteria": criteria,
        "channel": channel,
    }


@dataclass(frozen=True)
class EnsureResult:
    """What `ensure_subscriptions` did, by Subscription id (no secrets in here)."""

    created: tuple[str, ...] = ()
    updated: tuple[str, ...] = ()
    deleted: tuple[str, ...] = ()
    unchanged: tuple[str, ...] = ()

    @property
    def changed(self) -> bool:
        return bool(self.created or self.updated or self.deleted)


def plan_changes(
    desired: Sequence[Resource], existing: Iterable[Resource], owner: str
) -> tuple[list[Resource], list[Resource], list[str], list[str]]:
    """(to create, to update, ids to delete, ids unchanged): pure, so the rules are testable.

    Only Subscriptions tagged with `owner` are ours to update or delete. One of ours counts as
    unchanged when what decides delivery (criteria, channel) is the same and the server has not
    turned it off or marked it in error: HAPI moves "requested" to "active" by itself, and
    sending "requested" again would only make a new version.
    """
    ours = {
        sub["id"]: sub for sub in existing if _owned(sub, owner) and isinstance(sub.get("id"), str)
    }
    wanted_ids = {sub["id"] for sub in desired}
    create: list[Resource] = []
    update: list[Resource] = []
    unchanged: list[str] = []
    for sub in desired:
        current = ours.get(sub["id"])
        if current is None:
            create.append(sub)
        elif _delivery(current) == _delivery(sub) and current.get("status") in _WORKING:
            unchanged.append(sub["id"])
        else:
            update.append(sub)
    delete = sorted(sub_id for sub_id in ours if sub_id not in wanted_ids)
    return create, update, delete, unchanged


def ensure_subscriptions(client: FhirClient, plan: ReadPlan, hook: HookSettings) -> EnsureResult:
    """Make the server hold exactly the Subscriptions the plan needs for this owner: create the
    missing, update the changed, delete ours that the plan no longer needs.

    Ours are found by tag; each desired one is also read by id, because HAPI may answer a
    repeated search from its 60-second cache and miss one created a moment ago. A desired id
    held by a Subscription without our tag is someone else's: it is left alone and
    ForeignSubscription raised rather than overwritten.
    """
    client.secrets.add(hook.secret)  # taken out of any error that would quote a Subscription
    desired = desired_subscriptions(plan, hook)
    tag = f"{OWNER_TAG_SYSTEM}|{hook.owner}"
    found = {
        sub["id"]: sub
        for sub in client.search("Subscription", [("_tag", tag), ("_count", "200")])
        if sub.get("resourceType") == "Subscription" and isinstance(sub.get("id"), str)
    }
    for sub in desired:
        if sub["id"] not in found:
            current = _read_or_none(client, sub["id"])
            if current is not None:
                _refuse_foreign(current, hook.owner)
                found[sub["id"]] = current
    create, update, delete, unchanged = plan_changes(desired, found.values(), hook.owner)
    for sub in [*create, *update]:
        client.update(sub)
    _delete(client, delete)
    return EnsureResult(
        created=tuple(sub["id"] for sub in create),
        updated=tuple(sub["id"] for sub in update),
        deleted=tuple(delete),
        unchanged=tuple(unchanged),
    )


def remove_subscriptions(client: FhirClient, owner: str) -> tuple[str, ...]:
    """Delete every Subscription tagged with `owner` (turning notifications off); their ids."""
    tag = f"{OWNER_TAG_SYSTEM}|{owner}"
    ours = sorted(
        sub["id"]
        for sub in client.search("Subscription", [("_tag", tag), ("_count", "200")])
        if _owned(sub, owner) and isinstance(sub.get("id"), str)
    )
    _delete(client, ours)
    return tuple(ours)


def _delete(client: FhirClient, sub_ids: Sequence[str]) -> None:
    """One transaction of DELETEs (a DELETE may be retried: FhirClient.transaction)."""
    if not sub_ids:
        return
    entries = [{"request": {"method": "DELETE", "url": f"Subscription/{i}"}} for i in sub_ids]
    client.transaction({"resourceType": "Bundle", "type": "transaction", "entry": entries})


def _read_or_none(client: FhirClient, sub_id: str) -> Resource | None:
    try:
        return client.read("Subscription", sub_id)
    except FhirNotFound:  # 404, and 410 for one deleted before
        return None


def _refuse_foreign(sub: Resource, owner: str) -> None:
    if not _owned(sub, owner):
        raise ForeignSubscription(
            f"Subscription/{sub.get('id')} exists without the {owner!r} owner tag; "
            "not ours to change (choose another owner)"
        )


def _owned(sub: Resource, owner: str) -> bool:
    tags = (sub.get("meta") or {}).get("tag") or []
    return any(
        isinstance(tag, dict) and tag.get("system") == OWNER_TAG_SYSTEM and tag.get("code") == owner
        for tag in tags
    )


def _delivery(sub: Resource) -> tuple[Any, ...]:
    """What decides which changes are sent where, and how."""
    channel = sub.get("channel") or {}
    return (
        sub.get("criteria"),
        channel.get("type"),
        channel.get("endpoint"),
        channel.get("payload"),
        tuple(channel.get("header") or ()),
    )
