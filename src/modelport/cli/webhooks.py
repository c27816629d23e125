"""``modelport webhooks``: subscriptions to registry events and their deliveries (docs/webhooks.md).

Works on the registry database directly, as its operator; changes are audited with the actor
``local:<OS user>``. A running server's workers do the sending.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated

import typer

from modelport.cli.output import JsonFlag, Table, console, error_console, print_json

if TYPE_CHECKING:  # imported where a command runs (cli/main.py, "the core … never at start")
    from modelport.events.store import WebhookStore
    from modelport.registry.service import Registry

__all__ = ["register_commands"]

webhooks_app = typer.Typer(help="Webhooks: registry events sent to your URLs, signed.", no_args_is_help=True)
_open: Callable[[], Registry]


def register_commands(app: typer.Typer, open_registry: Callable[[], Registry]) -> None:
    global _open
    _open = open_registry
    app.add_typer(webhooks_app, name="webhooks")


def _store(registry: Registry) -> WebhookStore:
    from modelport.events.store import WebhookStore

    return WebhookStore(registry.store)


def _actor() -> str:
    from modelport.registry.service import local_actor

    return local_actor()


@webhooks_app.command("add")
def add(
    url: Annotated[str, typer.Argument(metavar="URL", help="Where to POST events (https).")],
    actions: Annotated[
        list[str] | None,
        typer.Option("--actions", help="Action pattern, e.g. 'alias.*' (repeatable; default *)."),
    ] = None,
    models: Annotated[
        list[str] | None, typer.Option("--models", help="Model name pattern (repeatable; default *).")
    ] = None,
    json_out: JsonFlag = False,
) -> None:
    """Subscribe URL to registry events and print its signing secret (once)."""
    from modelport.events.urls import UrlPolicy, check_url

    registry = _open()
    try:
        check_url(url, UrlPolicy.from_settings(registry.settings))
        subscription, secret = _store(registry).create(
            url=url, actions=actions, models=models, actor=_actor()
        )
    finally:
        registry.close()
    if json_out:
        print_json({"webhook": subscription.to_dict(), "secret": secret})
        return
    console.print(f"webhook {subscription.id} created. Its signing secret is shown only once:")
    sys.stdout.write(secret + "\n")
    sys.stdout.flush()
    error_console.print("verify X-Modelport-Signature with it (docs/webhooks.md)")


@webhooks_app.command("list")
def list_webhooks(json_out: JsonFlag = False) -> None:
    """Every subscription with its filters (never a secret)."""
    registry = _open()
    try:
        subscriptions = _store(registry).subscriptions()
    finally:
        registry.close()
    if json_out:
        print_json([s.to_dict() for s in subscriptions])
        return
    table = Table(title="webhooks")
    for column in ("id", "url", "actions", "models", "enabled"):
        table.add_column(column, overflow="fold")
    for s in subscriptions:
        table.add_row(s.id, s.url, ", ".join(s.actions), ", ".join(s.models), "yes" if s.enabled else "no")
    console.print(table)


@webhooks_app.command("remove")
def remove(webhook_id: Annotated[str, typer.Argument(metavar="ID")], json_out: JsonFlag = False) -> None:
    """Delete a subscription with its deliveries."""
    registry = _open()
    try:
        gone = _store(registry).remove(webhook_id, actor=_actor())
    finally:
        registry.close()
    if json_out:
        print_json(gone.to_dict())
    else:
        console.print(f"webhook {gone.id} removed")


@webhooks_app.command("disable")
def disable(webhook_id: Annotated[str, typer.Argument(metavar="ID")], json_out: JsonFlag = False) -> None:
    """Pause a subscription: nothing is sent to it until it is enabled again."""
    _switch(webhook_id, False, json_out)


@webhooks_app.command("enable")
def enable(webhook_id: Annotated[str, typer.Argument(metavar="ID")], json_out: JsonFlag = False) -> None:
    """Resume a paused subscription, from now on (what happened while it was paused is not sent)."""
    _switch(webhook_id, True, json_out)


def _switch(webhook_id: str, enabled: bool, json_out: bool) -> None:
    registry = _open()
    try:
        changed = _store(registry).set_enabled(webhook_id, enabled, actor=_actor())
    finally:
        registry.close()
    if json_out:
        print_json(changed.to_dict())
    else:
        console.print(f"webhook {changed.id} {'enabled' if enabled else 'disabled'}")


@webhooks_app.command("deliveries")
def deliveries(
    webhook_id: Annotated[str, typer.Argument(metavar="ID")],
    dead: Annotated[bool, typer.Option("--dead", help="Only dead letters.")] = False,
    limit: Annotated[int, typer.Option("--limit", min=1, max=9999, help="At most this many.")] = 100,
    json_out: JsonFlag = False,
) -> None:
    """A subscription's deliveries, newest first, with every attempt."""
    registry = _open()
    try:
        found = _store(registry).deliveries(webhook_id, status="dead" if dead else None, limit=limit)
    finally:
        registry.close()
    if json_out:
        print_json([d.to_dict() for d in found])
        return
    table = Table(title=f"deliveries of {webhook_id}")
    for column in ("id", "event", "action", "status", "attempts", "last"):
        table.add_column(column, overflow="fold")
    for d in found:
        last = d.history[-1] if d.history else None
        outcome = "—" if last is None else (last.error or str(last.status_code))
        table.add_row(d.id, str(d.audit_seq), d.action, d.status, str(d.attempts), outcome)
    console.print(table)


@webhooks_app.command("retry")
def retry(
    webhook_id: Annotated[str, typer.Argument(metavar="ID")],
    delivery_id: Annotated[str, typer.Argument(metavar="DELIVERY")],
    json_out: JsonFlag = False,
) -> None:
    """Send a dead-lettered delivery again (at the servers' next poll)."""
    registry = _open()
    try:
        delivery = _store(registry).retry(webhook_id, delivery_id, actor=_actor())
    finally:
        registry.close()
    if json_out:
        print_json(delivery.to_dict())
    else:
        console.print(f"delivery {delivery.id} queued again")
