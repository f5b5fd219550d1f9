"""FHIR Subscriptions from the read plan (subscriptions.py) and notifications (notifications.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, cast

import pytest

from service.currency.notifications import (
    Change,
    NotificationRequest,
    parse_notification,
)
from service.currency.subscriptions import (
    OWNER_TAG_SYSTEM,
    ForeignSubscription,
    HookSettings,
    desired_subscriptions,
    ensure_subscriptions,
    plan_changes,
    remove_subscriptions,
    subscription_types,
)
from service.fhir.client import FhirClient
from service.fhir.errors import FhirNotFound
from service.fhir.http_parse import SearchParams, WriteResult
from service.fhir.limits import MAX_JSON_DEPTH
from service.fhir.redact import Secrets
from service.mapping import Mappings
from service.read_plan import read_plan, token_list

SECRET = "s3cret-value"
HOOK = HookSettings("https://screen.example.org/v1/notifications/fhir", SECRET, owner="prod")
AUTH = {"Authorization": f"Bearer {SECRET}"}


# --- which Subscriptions ------------------------------------------------------------------


def test_one_subscription_per_type_read_plus_patient(mappings: Mappings) -> None:
    plan = read_plan(mappings)
    wanted = dict(subscription_types(plan))
    assert list(wanted) == [read.resource_type for read in plan.reads] + ["Patient"]
    observation = next(read for read in plan.reads if read.resource_type == "Observation")
    assert observation.codes
    assert wanted["Observation"] == "Observation?code=" + token_list(observation.codes)
    assert "http://loinc.org|2986-8" in wanted["Observation"]  # testosterone
    assert wanted["Condition"] == "Condition?"
    assert wanted["Patient"] == "Patient?"
    assert "Medication" not in wanted  # names no patient: left to the sweeps


def test_desired_subscription_shape(mappings: Mappings) -> None:
    subs = {sub["id"]: sub for sub in desired_subscriptions(read_plan(mappings), HOOK)}
    sub = subs["medcare-prod-observation"]
    assert sub["status"] == "requested" and sub["reason"]
    assert sub["meta"]["tag"] == [{"system": OWNER_TAG_SYSTEM, "code": "prod"}]
    assert sub["channel"] == {
        "type": "rest-hook",
        "endpoint": HOOK.endpoint,
        "payload": "application/fhir+json",
        "header": [f"Authorization: Bearer {SECRET}"],
    }
    assert all(len(sub_id) <= 64 for sub_id in subs)


def test_id_only_subscriptions_name_their_type_in_the_endpoint(mappings: Mappings) -> None:
    hook = HookSettings(HOOK.endpoint + "/", SECRET, payload="id-only", header_name="X-Hook-Key")
    subs = desired_subscriptions(read_plan(mappings), hook)
    condition = next(sub for sub in subs if sub["criteria"] == "Condition?")
    assert condition["channel"] == {
        "type": "rest-hook",
        "endpoint": HOOK.endpoint + "/Condition",
        "header": [f"X-Hook-Key: {SECRET}"],
    }


def test_hook_settings_keep_the_secret_out_of_repr_and_refuse_bad_values() -> None:
    assert SECRET not in repr(HOOK)
    for bad in (
        {"endpoint": "ftp://x"},
        {"secret": ""},
        {"secret": "a\nb"},
        {"header_name": "Bad Header"},
        {"owner": "Not_Valid"},
        {"payload": "xml"},
    ):
        kwargs: dict[str, Any] = {"endpoint": HOOK.endpoint, "secret": SECRET, **bad}
        with pytest.raises(ValueError):
            HookSettings(**kwargs)


# --- ensure: create missing, update changed, delete stale, leave others alone -------------


def test_plan_changes(mappings: Mappings) -> None:
    desired = desired_subscriptions(read_plan(mappings), HOOK)
    by_id = {sub["id"]: sub for sub in desired}
    active = {**by_id["medcare-prod-condition"], "status": "active"}
    moved = {**by_id["medcare-prod-procedure"], "criteria": "Procedure?code=x|1"}
    errored = {**by_id["medcare-prod-patient"], "status": "error"}
    stale = {**by_id["medcare-prod-condition"], "id": "medcare-prod-encounter"}
    foreign = {**stale, "id": "theirs", "meta": {"tag": [{"system": "x", "code": "prod"}]}}
    create, update, delete, unchanged = plan_changes(
        desired, [active, moved, errored, stale, foreign], "prod"
    )
    assert unchanged == ["medcare-prod-condition"]  # HAPI made it active: no new version
    assert [sub["id"] for sub in update] == ["medcare-prod-procedure", "medcare-prod-patient"]
    assert delete == ["medcare-prod-encounter"]  # ours, no longer planned; "theirs" untouched
    assert len(create) == len(desired) - 3


class FakeServer:
    """Subscriptions by id, answering as FhirClient does; records the writes. `client` is the
    same object typed as the FhirClient it stands in for."""

    def __init__(self, held: list[dict[str, Any]], cached_search: bool = False) -> None:
        self.held = {sub["id"]: sub for sub in held}
        self.cached_search = cached_search  # HAPI: a repeated search may miss new ones
        self.writes: list[str] = []
        self.client = cast(FhirClient, self)
        self.secrets = Secrets()

    def search(
        self, resource_type: str, params: SearchParams, patient: str | None = None
    ) -> Iterator[dict[str, Any]]:
        assert resource_type == "Subscription"
        system, code = dict(params)["_tag"].split("|")
        if self.cached_search:
            return iter(())
        return iter(
            [
                sub
                for sub in self.held.values()
                if {"system": system, "code": code} in sub.get("meta", {}).get("tag", [])
            ]
        )

    def read(self, resource_type: str, resource_id: str, patient: str | None = None) -> Any:
        if resource_id not in self.held:
            raise FhirNotFound("gone", request=f"GET Subscription/{resource_id}")
        return self.held[resource_id]

    def update(self, resource: dict[str, Any], **_: Any) -> WriteResult:
        self.writes.append(f"PUT {resource['id']}")
        self.held[resource["id"]] = {**resource, "status": "active"}  # HAPI activates it
        return WriteResult(resource, 201, None, None)

    def transaction(self, bundle: dict[str, Any], patient: str | None = None) -> dict[str, Any]:
        for entry in bundle["entry"]:
            method, url = entry["request"]["method"], entry["request"]["url"]
            self.writes.append(f"{method} {url.split('/')[1]}")
            del self.held[url.split("/")[1]]
        return {"resourceType": "Bundle", "type": "transaction-response"}


def test_ensure_is_idempotent_and_removes_only_its_own(mappings: Mappings) -> None:
    plan = read_plan(mappings)
    theirs = {"resourceType": "Subscription", "id": "theirs", "status": "active"}
    stale = {**desired_subscriptions(plan, HOOK)[0], "id": "medcare-prod-encounter"}
    server = FakeServer([theirs, stale])
    first = ensure_subscriptions(server.client, plan, HOOK)
    assert len(first.created) == len(subscription_types(plan))
    assert first.deleted == ("medcare-prod-encounter",)
    assert "theirs" in server.held and "medcare-prod-encounter" not in server.held
    server.writes.clear()
    again = ensure_subscriptions(server.client, plan, HOOK)
    assert not again.changed and server.writes == []
    assert len(again.unchanged) == len(first.created)
    assert server.secrets.scrub(f"said: Bearer {SECRET}") == "said: Bearer ***"


def test_remove_deletes_only_the_owners(mappings: Mappings) -> None:
    theirs = {"resourceType": "Subscription", "id": "theirs", "status": "active"}
    server = FakeServer([theirs])
    made = ensure_subscriptions(server.client, read_plan(mappings), HOOK).created
    assert remove_subscriptions(server.client, "prod") == tuple(sorted(made))
    assert list(server.held) == ["theirs"]
    assert remove_subscriptions(server.client, "prod") == ()


def test_ensure_reads_by_id_when_the_search_is_stale(mappings: Mappings) -> None:
    plan = read_plan(mappings)
    server = FakeServer([])
    ensure_subscriptions(server.client, plan, HOOK)
    server.cached_search = True
    server.writes.clear()
    assert not ensure_subscriptions(server.client, plan, HOOK).changed
    assert server.writes == []


def test_ensure_never_overwrites_a_foreign_subscription_with_our_id(mappings: Mappings) -> None:
    squatter = {"resourceType": "Subscription", "id": "medcare-prod-observation"}
    server = FakeServer([squatter])
    with pytest.raises(ForeignSubscription):
        ensure_subscriptions(server.client, read_plan(mappings), HOOK)
    assert server.writes == []


# --- notifications ------------------------------------------------------------------------


def notify(
    method: str = "PUT",
    path: str = "",
    body: Any = b"",
    headers: dict[str, str] | None = None,
    hook: HookSettings = HOOK,
) -> Any:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = NotificationRequest(method, path, AUTH if headers is None else headers, raw)
    return parse_notification(request, hook)


OBS = {
    "resourceType": "Observation",
    "id": "1003",
    "subject": {"reference": "Patient/p-1"},
    "code": {"coding": [{"system": "http://loinc.org", "code": "2986-8"}]},
}


def test_hapi_full_payload_names_resource_and_patient() -> None:
    result = notify("PUT", "Observation/1003", OBS)
    assert result.accepted and result.status == 200
    assert result.changes == (Change("Observation", "1003", "p-1"),)
    assert result.patients == ("p-1",)


def test_bare_resource_posted_and_absolute_or_versioned_references() -> None:
    absolute = {**OBS, "subject": {"reference": "https://fhir.example.org/Patient/p-2/_history/3"}}
    assert notify("POST", "", absolute).patients == ("p-2",)
    med = {"resourceType": "AllergyIntolerance", "id": "a1", "patient": {"reference": "Patient/p3"}}
    assert notify("POST", "", med).patients == ("p3",)
    patient = {"resourceType": "Patient", "id": "p-4"}
    assert notify("PUT", "Patient/p-4", patient).changes == (Change("Patient", "p-4", "p-4"),)
    group_subject = {**OBS, "subject": {"reference": "Group/g1"}}
    assert notify("POST", "", group_subject).changes == (Change("Observation", "1003", None),)


def test_bundles_history_and_subscription_notification() -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "history",
        "entry": [
            {"resource": {"resourceType": "Parameters", "parameter": []}},  # R4 backport status
            {"fullUrl": "https://f.example.org/Observation/1003", "resource": OBS},
            {"fullUrl": "https://f.example.org/Condition/c9/_history/2"},  # id-only
            {"request": {"method": "DELETE", "url": "Procedure/x1"}},
            {"fullUrl": "https://f.example.org/Patient/p-7"},
            "junk",
        ],
    }
    result = notify("POST", "", bundle)
    assert result.changes == (
        Change("Observation", "1003", "p-1"),
        Change("Condition", "c9", None),
        Change("Procedure", "x1", None, deleted=True),
        Change("Patient", "p-7", "p-7"),
    )
    notification = {**bundle, "type": "subscription-notification", "entry": bundle["entry"][:2]}
    assert notify("POST", "", notification).patients == ("p-1",)
    assert notify("POST", "", {**bundle, "type": "transaction"}).status == 400


def test_id_only_notifications_ask_for_a_sweep() -> None:
    everything = notify("POST", "", b"")
    assert everything.accepted and everything.sweep_all and not everything.changes
    by_type = notify("POST", "Observation", b"")
    assert by_type.sweep_types == ("Observation",) and not by_type.sweep_all
    named = notify("POST", "Condition/c1", b"  ")
    assert named.changes == (Change("Condition", "c1", None),)
    deleted = notify("DELETE", "Observation/1003", b"")
    assert deleted.changes == (Change("Observation", "1003", None, deleted=True),)


def test_secret_checked_first_in_any_header_case() -> None:
    assert notify(headers={}).status == 401
    assert notify(headers={"Authorization": "Bearer wrong"}).status == 403
    assert notify(headers={"authorization": f"Bearer {SECRET}"}).accepted
    custom = HookSettings(HOOK.endpoint, SECRET, header_name="X-Hook-Key")
    assert notify(headers={"x-hook-key": SECRET}, hook=custom).accepted
    assert notify(headers=AUTH, hook=custom).status == 401
    refused = notify(headers={"Authorization": "Bearer wrong"}, body=b"{not json")
    assert refused.status == 403 and SECRET not in refused.reason and "wrong" in refused.reason


def test_malformed_or_oversized_notifications_are_refused() -> None:
    deep: Any = {"resourceType": "Observation", "id": "1"}
    for _ in range(MAX_JSON_DEPTH + 5):
        deep = {"x": deep}
    deep["resourceType"] = "Observation"
    assert notify("POST", "", b"{not json").status == 400
    assert notify("POST", "", deep).status == 400
    assert notify("POST", "", [1, 2]).status == 400
    assert notify("POST", "", {"resourceType": "Observation"}).status == 400  # no id
    assert notify("POST", "", {"resourceType": "Observation", "id": "bad id!"}).status == 400
    assert notify("POST", "a/b/c", OBS).status == 404
    assert notify("POST", "Observation/bad id", b"").status == 404
    assert notify("GET", "", b"").status == 405
    assert notify("DELETE", "Observation", b"").status == 400
    big = NotificationRequest("POST", "", AUTH, b" " * 11)
    assert parse_notification(big, HOOK, max_bytes=10).status == 413
