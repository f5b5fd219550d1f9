"""`medcare-screen subscriptions ensure | list | remove` (issue 14 item 2) on a stand-in server."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from service import cli_subscriptions
from service.cli import main
from service.fhir.errors import FhirNotFound

SECRET = "notify-secret-0123456789"


class FakeServer:
    """The four FhirClient calls the Subscriptions use, over a dict of Subscriptions."""

    def __init__(self) -> None:
        self.subs: dict[str, dict[str, Any]] = {}
        self.secrets: set[str] = set()  # FhirClient redacts these from its errors

    def search(self, resource_type: str, params: Any, patient: str | None = None) -> Iterator[Any]:
        tag = dict(params)["_tag"].split("|")[1]
        for sub in list(self.subs.values()):
            if any(t.get("code") == tag for t in sub["meta"]["tag"]):
                yield sub

    def read(self, resource_type: str, resource_id: str, patient: str | None = None) -> Any:
        if resource_id not in self.subs:
            raise FhirNotFound("gone")
        return self.subs[resource_id]

    def update(self, resource: dict[str, Any], **_: Any) -> None:
        self.subs[resource["id"]] = resource

    def transaction(self, bundle: dict[str, Any], patient: str | None = None) -> Any:
        for entry in bundle["entry"]:
            self.subs.pop(entry["request"]["url"].split("/")[1], None)
        return {}


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> FakeServer:
    fake = FakeServer()
    monkeypatch.setattr(cli_subscriptions, "_client", lambda _settings: fake)
    monkeypatch.setenv("MEDCARE_NOTIFY_URL", "https://screen.example.org/v1/notifications")
    monkeypatch.setenv("MEDCARE_NOTIFY_SECRET", SECRET)
    return fake


def run(*argv: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["subscriptions", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_ensure_is_idempotent_list_hides_the_secret_remove_deletes_ours(
    server: FakeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run("ensure", capsys=capsys)
    assert code == 0
    created = [line for line in out.splitlines() if line.endswith("\tcreated")]
    assert "Subscription/medcare-default-observation\tcreated" in created
    assert "Subscription/medcare-default-patient\tcreated" in created
    assert all(
        sub["channel"]["header"] == [f"Authorization: Bearer {SECRET}"]
        for sub in server.subs.values()
    )
    assert SECRET in server.secrets
    code, again, _ = run("ensure", capsys=capsys)
    assert code == 0 and "created" not in again and "updated" not in again
    code, listed, _ = run("list", capsys=capsys)
    assert code == 0 and len(listed.splitlines()) == len(server.subs)
    assert SECRET not in listed and "Observation?code=" in listed
    code, removed, _ = run("remove", capsys=capsys)
    assert code == 0 and server.subs == {} and removed.count("\tdeleted") == len(created)


def test_ensure_without_a_notify_url_or_secret_is_one_line_exit_2(
    server: FakeServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("MEDCARE_NOTIFY_SECRET")
    code, _, err = run("ensure", capsys=capsys)
    assert code == 2 and "MEDCARE_NOTIFY_SECRET" in err and len(err.splitlines()) == 1
    monkeypatch.setenv("MEDCARE_NOTIFY_SECRET", SECRET)
    monkeypatch.delenv("MEDCARE_NOTIFY_URL")
    code, _, err = run("ensure", capsys=capsys)
    assert code == 2 and "MEDCARE_NOTIFY_URL" in err
    assert server.subs == {}
