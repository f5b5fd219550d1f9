"""`medcare-screen subscriptions ensure | list | remove`: the service's FHIR Subscriptions.

Why a command: the Subscriptions live on the FHIR server and point back at this service
(MEDCARE_NOTIFY_URL, with the secret MEDCARE_NOTIFY_SECRET in their channel header), so
someone must put them there once per deployment, and again when the mappings change what a
screen reads; `ensure` is idempotent (create the missing, update the changed, delete ours that
the read plan no longer needs: service/currency/subscriptions.py) and safe to run at every
deploy. `list` shows ours without the header (it holds the secret); `remove` deletes ours,
turning notifications off (the sweeps still keep results current, more slowly).

Errors are one line naming what is wrong, exit status 2, as the other commands'.
"""

from __future__ import annotations

import argparse
from typing import Any, TextIO

from service.currency.subscriptions import (
    OWNER_TAG_SYSTEM,
    ForeignSubscription,
    HookSettings,
    ensure_subscriptions,
    remove_subscriptions,
)
from service.fhir.client import FhirClient
from service.fhir.errors import FhirError
from service.read_plan import read_plan
from service.settings import ConfigError, Settings, settings_from_env

EXIT_OK, EXIT_INPUT = 0, 2


def add_subscriptions_parser(commands: Any) -> None:
    """The `subscriptions` subcommand and its actions, on the CLI's subparsers."""
    subs = commands.add_parser(
        "subscriptions",
        help="the FHIR Subscriptions that notify this service of changes (MEDCARE_NOTIFY_*)",
    )
    actions = subs.add_subparsers(dest="action", required=True)
    actions.add_parser("ensure", help="create or update ours from the read plan; drop unneeded")
    actions.add_parser("list", help="ours on the FHIR server (without the secret header)")
    actions.add_parser("remove", help="delete ours (notifications off; sweeps go on)")
    for action in actions.choices.values():
        action.add_argument(
            "--owner", default="default",
            help="tells apart several services on one FHIR server (default: 'default')",
        )  # fmt: skip


def run_subscriptions(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """One action; one line on `err` and exit 2 for anything wrong."""
    try:
        settings = settings_from_env()
        client = _client(settings)
        if args.action == "ensure":
            result = ensure_subscriptions(
                client, _plan(settings), hook_settings(settings, args.owner)
            )
            for verb in ("created", "updated", "deleted", "unchanged"):
                for sub_id in getattr(result, verb):
                    print(f"Subscription/{sub_id}\t{verb}", file=out)
        elif args.action == "list":
            for sub in client.search(
                "Subscription", [("_tag", _tag(args.owner)), ("_count", "200")]
            ):
                channel = sub.get("channel") or {}
                print(f"Subscription/{sub.get('id')}\t{sub.get('status')}\t{sub.get('criteria')}"
                      f"\t{channel.get('endpoint')}\t{channel.get('payload') or 'id-only'}",
                      file=out)  # fmt: skip
        else:
            for sub_id in remove_subscriptions(client, args.owner):
                print(f"Subscription/{sub_id}\tdeleted", file=out)
    except (ConfigError, ForeignSubscription, FhirError, ValueError) as exc:
        print(f"medcare-screen: error: subscriptions {args.action}: {exc}", file=err)
        return EXIT_INPUT
    return EXIT_OK


def hook_settings(settings: Settings, owner: str = "default") -> HookSettings:
    """Where the FHIR server is to notify us; ConfigError naming what is missing."""
    api = settings.api
    if not api.notify_url:
        raise ConfigError("MEDCARE_NOTIFY_URL: required (this service's /v1/notifications URL)")
    if api.notify_secret is None or not api.notify_secret.get_secret_value():
        raise ConfigError("MEDCARE_NOTIFY_SECRET (or _FILE): required (a long random secret)")
    return HookSettings(
        endpoint=api.notify_url, secret=api.notify_secret.get_secret_value(),
        payload=api.notify_payload, owner=owner,
    )  # fmt: skip


def _client(settings: Settings) -> FhirClient:
    from service.compose import make_client

    client = make_client(settings.check_fhir())
    if client is None:
        raise ConfigError("MEDCARE_FHIR_BASE_URL: required (Subscriptions live on the server)")
    return client


def _plan(settings: Settings) -> Any:
    from service.mapping import load_mappings

    return read_plan(load_mappings(settings.screening.mappings_dir))


def _tag(owner: str) -> str:
    return f"{OWNER_TAG_SYSTEM}|{owner}"
