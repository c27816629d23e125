"""``modelport keys``, ``modelport usage`` and ``modelport audit``: the CLI side of docs/security.md.

The CLI works on the registry database directly, as its operator; changes are audited with the actor
``local:<OS user>``.
"""

import sys
from collections.abc import Callable
from datetime import date, timedelta
from typing import TYPE_CHECKING, Annotated

import typer

from modelport.cli.arguments import model_name
from modelport.cli.output import JsonFlag, Table, console, error_console, fields, print_json
from modelport.errors import AuditFailure, InvalidInput
from modelport.security.keys import KeyRecord, parse_duration, parse_quota, parse_rate
from modelport.tables import write_csv

if TYPE_CHECKING:  # imported where a command runs (cli/main.py, "the core … never at start")
    from rich.text import Text

    from modelport.registry.service import Registry
    from modelport.security.store import KeyStore

__all__ = ["audit_app", "keys_app", "register_commands"]

keys_app = typer.Typer(help="API keys: create, list, revoke, rotate.", no_args_is_help=True)
audit_app = typer.Typer(invoke_without_command=True)
_open: "Callable[[], Registry]"


def register_commands(app: typer.Typer, open_registry: "Callable[[], Registry]") -> None:
    global _open
    _open = open_registry
    app.add_typer(keys_app, name="keys")
    app.add_typer(audit_app, name="audit")
    app.command("usage")(usage)


def _keys(registry: "Registry") -> "KeyStore":
    from modelport.security.store import KeyStore

    return KeyStore(registry.store)


def _actor() -> str:
    from modelport.registry.service import local_actor

    return local_actor()


def _keys_table(keys: list[KeyRecord]) -> Table:
    table = Table(title="API keys")
    for column in ("id", "name", "role", "models", "rate/s", "quota/month", "expires", "status"):
        wraps = column in ("name", "expires")  # at spaces; the others hold one word (or a scope)
        table.add_column(column, no_wrap=not wraps, overflow="fold")
    for key in keys:
        table.add_row(
            key.id,
            key.name,
            key.role,
            ", ".join(key.models),
            f"{key.rate:g}" if key.rate else "—",
            f"{key.quota:,}" if key.quota else "—",
            f"{key.expires_at:%Y-%m-%d %H:%M}" if key.expires_at else "never",
            key.status(),
        )
    return table


def print_token(record: KeyRecord, token: str, json_out: bool, what: str = "created") -> None:
    if json_out:
        print_json({"key": record.to_dict(), "token": token})
        return
    console.print(f"key {record.id} ({record.name}, {record.role}) {what}. The secret is shown only once:")
    sys.stdout.write(token + "\n")
    sys.stdout.flush()
    error_console.print("send it as `Authorization: Bearer <key>` or `X-API-Key: <key>`")


@keys_app.command("create")
def create(
    name: Annotated[str, typer.Option("--name", help="Who or what the key is for.")],
    role: Annotated[str, typer.Option("--role", help="consumer, publisher or admin.")],
    models: Annotated[
        list[str] | None, typer.Option("--models", help="Model name pattern (repeatable; default *).")
    ] = None,
    expires: Annotated[str | None, typer.Option("--expires", help="Lifetime: 90d, 12h, 2w …")] = None,
    rate: Annotated[str | None, typer.Option("--rate", help="Rate limit: 50/s, 3000/min …")] = None,
    quota: Annotated[str | None, typer.Option("--quota", help="Monthly quota: 1000000/month.")] = None,
    json_out: JsonFlag = False,
) -> None:
    """Create a key and print its secret (once)."""
    registry = _open()
    try:
        created = _keys(registry).create(
            name=name,
            role=role,
            models=models,
            expires_in=parse_duration(expires) if expires else None,
            rate=parse_rate(rate) if rate else None,
            quota=parse_quota(quota) if quota else None,
            actor=_actor(),
        )
    finally:
        registry.close()
    assert created is not None
    print_token(*created, json_out)


@keys_app.command("list")
def list_keys(json_out: JsonFlag = False) -> None:
    """Every key with its role, scope, limits and status (never a secret)."""
    registry = _open()
    try:
        keys = _keys(registry).list_keys()
    finally:
        registry.close()
    if json_out:
        print_json([key.to_dict() for key in keys])
    else:
        console.print(_keys_table(keys))


@keys_app.command("revoke")
def revoke(key_id: Annotated[str, typer.Argument(metavar="KEY_ID")], json_out: JsonFlag = False) -> None:
    """Revoke a key: every worker refuses it within a second."""
    registry = _open()
    try:
        record = _keys(registry).revoke(key_id, actor=_actor())
    finally:
        registry.close()
    if json_out:
        print_json(record.to_dict())
    else:
        console.print(f"key {record.id} ({record.name}) revoked")


@keys_app.command("update")
def update_key(
    key_id: Annotated[str, typer.Argument(metavar="KEY_ID")],
    models: Annotated[
        list[str] | None, typer.Option("--models", help="New model patterns (repeatable; replaces the old).")
    ] = None,
    expires: Annotated[str | None, typer.Option("--expires", help="New lifetime from now: 90d …")] = None,
    rate: Annotated[str | None, typer.Option("--rate", help="New rate limit: 50/s …")] = None,
    quota: Annotated[str | None, typer.Option("--quota", help="New monthly quota: 1000000/month.")] = None,
    clear: Annotated[
        list[str] | None, typer.Option("--clear", help="Remove a limit: rate, quota or expires (repeatable).")
    ] = None,
    json_out: JsonFlag = False,
) -> None:
    """Change a key's scope or limits: every worker applies it within a second."""
    registry = _open()
    try:
        record = _keys(registry).update(
            key_id,
            actor=_actor(),
            models=models,
            rate=parse_rate(rate) if rate else None,
            quota=parse_quota(quota) if quota else None,
            expires_in=parse_duration(expires) if expires else None,
            clear=tuple(clear or ()),
        )
    finally:
        registry.close()
    if json_out:
        print_json(record.to_dict())
    else:
        console.print(_keys_table([record]))


@keys_app.command("rotate")
def rotate(
    key_id: Annotated[str, typer.Argument(metavar="KEY_ID")],
    grace: Annotated[
        str, typer.Option("--grace", help="How long the old secret keeps working (0s … 30d).")
    ] = "24h",
    json_out: JsonFlag = False,
) -> None:
    """Give a key a new secret; the old one keeps working for the grace period."""
    registry = _open()
    try:
        record, token = _keys(registry).rotate(key_id, grace=parse_duration(grace), actor=_actor())
    finally:
        registry.close()
    until = record.previous_until
    print_token(record, token, json_out, what="rotated")
    if not json_out:
        note = (
            f"the old secret works until {until:%Y-%m-%d %H:%M:%S} UTC"
            if until
            else "the old secret no longer works"
        )
        error_console.print(note)


def usage(
    key: Annotated[str | None, typer.Option("--key", help="Only this key id.")] = None,
    model: Annotated[str | None, typer.Option("--model", help="Only this model.")] = None,
    since: Annotated[
        str | None, typer.Option("--since", help="From this day (YYYY-MM-DD) or 7d ago.")
    ] = None,
    json_out: JsonFlag = False,
    csv_out: Annotated[bool, typer.Option("--csv", help="Print CSV (for billing).")] = False,
) -> None:
    """Requests, rows, errors and bytes per key × model × day."""
    if model is not None:
        model_name(model)
    start: date | None = None
    if since:
        try:
            start = date.fromisoformat(since)
        except ValueError:
            try:
                start = date.today() - timedelta(days=parse_duration(since).days)
            except InvalidInput:
                raise InvalidInput(
                    f"--since {since!r} must be a date (YYYY-MM-DD) or a span like 7d"
                ) from None
    registry = _open()
    try:
        rows = _keys(registry).usage(key_id=key, model=model, since=start)
    finally:
        registry.close()
    if json_out:
        print_json([row.to_dict() for row in rows])
        return
    if csv_out:
        write_csv(
            sys.stdout,
            ["day", "key_id", "model", "requests", "rows", "errors", "bytes_in", "bytes_out"],
            ([r.day, r.key_id, r.model, r.requests, r.rows, r.errors, r.bytes_in, r.bytes_out] for r in rows),
        )
        return
    table = Table(title="usage")
    for column in ("day", "key", "model", "requests", "rows", "errors", "bytes in", "bytes out"):
        table.add_column(column, no_wrap=column in ("day", "key"), overflow="fold")
    for r in rows:
        table.add_row(
            r.day.isoformat(),
            r.key_id,
            r.model,
            f"{r.requests:,}",
            f"{r.rows:,}",
            f"{r.errors:,}",
            f"{r.bytes_in:,}",
            f"{r.bytes_out:,}",
        )
    console.print(table)


ActionOption = Annotated[str | None, typer.Option("--action", help="Only this action (alias.set …).")]
TargetOption = Annotated[str | None, typer.Option("--target", help="Only targets starting with this.")]
ActorOption = Annotated[str | None, typer.Option("--actor", help="Only this actor (key:ID, local:USER).")]
LimitOption = Annotated[int, typer.Option("--limit", help="The newest N records.", min=1)]


@audit_app.callback()
def audit(
    ctx: typer.Context,
    action: ActionOption = None,
    target: TargetOption = None,
    actor: ActorOption = None,
    limit: LimitOption = 100,
    json_out: JsonFlag = False,
) -> None:
    """The audit trail: list records, verify the chain. `audit list` (or `audit` alone) lists the
    records, `audit verify` checks their hash chain."""
    if ctx.invoked_subcommand is None:
        _list(action, target, actor, limit, json_out)


@audit_app.command("list")
def audit_list(
    action: ActionOption = None,
    target: TargetOption = None,
    actor: ActorOption = None,
    limit: LimitOption = 100,
    json_out: JsonFlag = False,
) -> None:
    """List audit records, oldest first (the newest --limit of them)."""
    _list(action, target, actor, limit, json_out)


def _list(action: str | None, target: str | None, actor: str | None, limit: int, json_out: bool) -> None:
    registry = _open()
    try:
        records = registry.store.audit_records(action=action, target=target, actor=actor, limit=limit)
    finally:
        registry.close()
    if json_out:
        print_json([record.to_dict() for record in records])
        return
    table = Table(title="audit log")
    for column in ("seq", "time (UTC)", "actor", "action", "target", "before", "after"):
        # One-word cells never wrap; the target (any text a client sent) folds so all of it shows;
        # before/after are `key: value` lines, cut with … where a word is wider than the column.
        table.add_column(
            column,
            no_wrap=column in ("seq", "actor", "action"),
            overflow="ellipsis" if column in ("before", "after") else "fold",
            width=10 if column == "time (UTC)" else None,  # date, then time: room for the rest
        )
    for r in records:
        table.add_row(
            str(r.seq),
            f"{r.at:%Y-%m-%d %H:%M:%S}",
            r.actor,
            r.action,
            r.target,
            _change(r.before),
            _change(r.after),
        )
    console.print(table)


def _change(value: object) -> "Text | str":
    """A record's before/after as ``key: value`` lines (a bare version number as ``version N``)."""
    if isinstance(value, dict) and "version" in value and len(value) == 1:
        return f"version {value['version']}"
    return fields(value, most=6, width=60)


@audit_app.command("verify")
def verify(json_out: JsonFlag = False) -> None:
    """Check the audit chain. Recompute the hash chain; fail (exit 4) naming the first edited, deleted
    or reordered record."""
    registry = _open()
    try:
        result = registry.store.verify_audit()
    finally:
        registry.close()
    if json_out:
        print_json(
            {"ok": result.ok, "records": result.count, "head": result.head, "problem": result.problem or None}
        )
        if not result.ok:
            raise typer.Exit(4)
        return
    if not result.ok:
        raise AuditFailure(f"the audit log does not verify: {result.problem}")
    console.print(f"audit log intact: {result.count} record(s), head {result.head}")
