"""``modelport release``, ``approvals``, ``retention``, ``gc``, ``label`` and ``alias history``: the CLI
side of docs/releases.md.

The CLI works on the registry database directly. Its changes are recorded under ``local:<OS user>``,
or — when ``MODELPORT_KEY`` holds a valid publisher or admin key — under that key, so that a second
person can approve from a terminal with their own key (the same key can never approve its own change).
"""

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer.core import TyperGroup

from modelport.cli.arguments import (
    OLD_FORMS,
    AliasRefArg,
    ModelNameArg,
    RefArg,
    alias_ref,
    model_name,
    refuse_old_form,
    version_of,
)
from modelport.cli.output import JsonFlag, Table, console, error_console, fields, print_json
from modelport.cli.progress import shown_progress
from modelport.errors import InvalidInput
from modelport.registry.names import parse_ref
from modelport.releases.manager import ReleaseManager
from modelport.releases.policy import AutoRollback
from modelport.releases.retention import RetentionPolicy
from modelport.security.keys import KeyRing

if TYPE_CHECKING:  # imported where a command runs (cli/main.py, "the core … never at start")
    from modelport.registry.service import Registry

__all__ = ["register_commands"]

_open: "Callable[[], Registry]"


class _ReleaseGroup(TyperGroup):
    """``modelport release NAME ALIAS --canary …`` (the old form, without a sub-command) is answered
    with the one form: ``modelport release start NAME@ALIAS …``."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            target = None  # a mistyped sub-command gets click's "No such command" instead
            if "@" in args[0]:
                target = args[0]
            elif len(args) > 1 and not args[1].startswith("-") and "@" not in args[1]:
                target = f"{args[0]}@{args[1]}"
            if target is not None:
                raise InvalidInput(
                    "`modelport release` needs a sub-command (start, status, promote, rollback, stop): "
                    f"write `modelport release start {target[:120]} …`"
                )
        return super().parse_args(ctx, args)


release_app = typer.Typer(
    cls=_ReleaseGroup,
    help="Canary, A/B and shadow releases on an alias. Start, status, promote, rollback, stop.",
    no_args_is_help=True,
)
approvals_app = typer.Typer(
    help="Changes of approval-protected aliases: list, approve, reject.", no_args_is_help=True
)


def register_commands(
    app: typer.Typer, alias_app: typer.Typer, open_registry: "Callable[[], Registry]"
) -> None:
    global _open
    _open = open_registry
    app.add_typer(release_app, name="release")
    app.add_typer(approvals_app, name="approvals")
    app.command("retention")(retention)
    app.command("gc")(gc)
    app.command("label", context_settings=OLD_FORMS)(label)
    alias_app.command("history", context_settings=OLD_FORMS)(alias_history)


def actor(registry: "Registry") -> str:
    """``key:<id>`` when ``MODELPORT_KEY`` holds a valid publisher/admin key, else the local actor."""
    from modelport.registry.service import local_actor
    from modelport.security.store import KeyStore

    token = os.environ.get("MODELPORT_KEY")
    if not token:
        return local_actor()
    ring = KeyRing(KeyStore(registry.store).list_keys(include_revoked=False))
    principal = ring.authenticate(token)
    principal.require("publish")
    return principal.actor


def _show_change(result: dict[str, Any], json_out: bool, done: str) -> None:
    for warning in result.get("warnings", []):  # on stderr: --json output stays clean
        error_console.print(f"warning: {warning}", markup=False, highlight=False)
    if json_out:
        print_json(result)
    elif result["status"] == "pending":
        change = result["change"]
        console.print(
            f"change {change['id']} ({change['action']} on {change['model']}@{change['alias']}) waits for "
            f"approval by another admin or publisher: `modelport approvals approve {change['id']}`"
        )
    else:
        console.print(done)


def _with(work: "Callable[[Registry, str], Any]") -> Any:
    registry = _open()
    try:
        return work(registry, actor(registry))
    finally:
        registry.close()


@release_app.command("start", context_settings=OLD_FORMS)
def start(
    ctx: typer.Context,
    ref: AliasRefArg,
    canary: Annotated[
        str | None,
        typer.Option("--canary", help="Version taking a share of the traffic: a number, label or alias."),
    ] = None,
    weight: Annotated[
        float | None, typer.Option("--weight", help="Percent of the alias's traffic for the canary.")
    ] = None,
    sticky_by: Annotated[
        str | None,
        typer.Option("--sticky-by", help="header:NAME or field:NAME: the same key always gets the same arm."),
    ] = None,
    shadow: Annotated[
        str | None,
        typer.Option("--shadow", help="Version receiving a copy of the traffic: a number, label or alias."),
    ] = None,
    auto_rollback: Annotated[
        str | None,
        typer.Option("--auto-rollback", help="e.g. error_rate=0.05,p99_ms=50,window=60,min_requests=100"),
    ] = None,
    override_reason: Annotated[
        str | None, typer.Option("--override-reason", help="Canary without a passing report (audited).")
    ] = None,
    allow_incompatible: Annotated[
        bool,
        typer.Option(
            "--allow-incompatible", help="A canary or shadow that cannot take the traffic (audited)."
        ),
    ] = False,
    json_out: JsonFlag = False,
) -> None:
    """Start or change a release on NAME@ALIAS: --canary V --weight P, and/or --shadow V (V: a version
    number, label or alias of the model, resolved now; two different versions, each able to take the
    alias's traffic, docs/releases.md)."""
    instead = f"{ref}@{ctx.args[0]}" if len(ctx.args) == 1 and "@" not in ref else "NAME@ALIAS"
    refuse_old_form(ctx.args, "release start NAME@ALIAS …", f"modelport release start {instead} …")
    name, alias = alias_ref(ref)
    canary_ref = None if canary is None else version_of(name, canary)
    shadow_ref = None if shadow is None else version_of(name, shadow)
    rule = None if auto_rollback is None else AutoRollback.parse(auto_rollback)
    numbers: dict[str, int | None] = {}

    def work(registry: "Registry", who: str) -> dict[str, Any]:
        for arm, chosen in (("canary", canary_ref), ("shadow", shadow_ref)):
            numbers[arm] = None if chosen is None else registry.get(chosen).number
        return ReleaseManager(registry).start(
            name,
            alias,
            actor=who,
            canary=numbers["canary"],
            weight=weight,
            sticky_by=sticky_by,
            shadow=numbers["shadow"],
            auto_rollback=rule,
            override_reason=override_reason,
            allow_incompatible=allow_incompatible,
        )

    result = _with(work)
    parts = []
    if canary is not None:
        parts.append(
            f"canary {numbers['canary']} takes {weight:g} %"
            + (f" (sticky by {sticky_by})" if sticky_by else "")
        )
    if shadow is not None:
        parts.append(f"shadow {numbers['shadow']} gets a copy")
    _show_change(result, json_out, f"{name}@{alias}: " + ", ".join(parts))


@release_app.command("status")
def status(ref: AliasRefArg, json_out: JsonFlag = False) -> None:
    """Per arm: traffic share, requests, p50/p99, error rate, predictions, shadow agreement, accuracy."""
    name, alias = alias_ref(ref)
    document = _with(lambda registry, _: ReleaseManager(registry).status(name, alias))
    if json_out:
        print_json(document)
        return
    release = document["release"]
    if release is None:
        console.print(f"{name}@{alias} → {document['version']}; no release is running")
        return
    table = Table(title=f"{name}@{alias} · release {release['release_id']} since {release['started_at']}")
    for column in (
        "arm",
        "version",
        "share",
        "requests",
        "p50 ms",
        "p99 ms",
        "error rate",
        "agreement",
        "accuracy",
        "top classes",
    ):
        table.add_column(column, no_wrap=column in ("arm", "version", "share", "requests", "agreement"))
    for arm, numbers in release["arms"].items():
        classes = sorted(numbers["classes"].items(), key=lambda kv: -kv[1])[:3]
        accuracy = numbers.get("live_accuracy") or {}
        table.add_row(
            arm,
            str(numbers.get("version")),
            "—" if numbers.get("share") is None else f"{numbers['share']:.1%}",
            f"{numbers['requests']:,}",
            _ms(numbers["p50_ms"]),
            _ms(numbers["p99_ms"]),
            "—" if numbers["error_rate"] is None else f"{numbers['error_rate']:.2%}",
            "—" if numbers.get("agreement") is None else f"{numbers['agreement']:.1%}",
            "—" if accuracy.get("accuracy") is None else f"{accuracy['accuracy']:.3f}",
            ", ".join(f"{k} {v:.0%}" for k, v in classes),
        )
    console.print(table)
    if release.get("weight") is not None:
        console.print(
            f"canary weight {release['weight']:g} %"
            + (f", sticky by {release['sticky_by']}" if release["sticky_by"] else "")
        )


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


@release_app.command("promote")
def promote(
    ref: Annotated[
        str, typer.Argument(metavar="NAME@ALIAS", help="The alias whose canary becomes its version.")
    ],
    override_reason: Annotated[str | None, typer.Option("--override-reason", help="Audited.")] = None,
    allow_incompatible: Annotated[
        bool,
        typer.Option("--allow-incompatible", help="A canary that cannot take the traffic (audited)."),
    ] = False,
    json_out: JsonFlag = False,
) -> None:
    """Move the alias fully to its canary and end the release."""
    name, alias = alias_ref(ref)
    result = _with(
        lambda registry, who: ReleaseManager(registry).promote(
            name, alias, actor=who, override_reason=override_reason, allow_incompatible=allow_incompatible
        )
    )
    _show_change(result, json_out, f"{name}@{alias} → {result.get('version')} (promoted)")


@release_app.command("rollback")
def rollback(
    ref: Annotated[str, typer.Argument(metavar="NAME@ALIAS", help="The alias to roll back.")],
    reason: Annotated[str | None, typer.Option("--reason", help="Why (audited).")] = None,
    json_out: JsonFlag = False,
) -> None:
    """Withdraw the running release; with none running, return the alias to its previous version."""
    name, alias = alias_ref(ref)
    result = _with(
        lambda registry, who: ReleaseManager(registry).rollback(name, alias, actor=who, reason=reason)
    )
    _show_change(result, json_out, f"{name}@{alias} → {result.get('version')} ({result.get('action')})")


@release_app.command("stop")
def stop(
    ref: Annotated[str, typer.Argument(metavar="NAME@ALIAS", help="The alias whose release ends.")],
    json_out: JsonFlag = False,
) -> None:
    """End the release: canary and shadow withdrawn, the alias keeps its version."""
    name, alias = alias_ref(ref)
    result = _with(lambda registry, who: ReleaseManager(registry).stop(name, alias, actor=who))
    _show_change(result, json_out, f"{name}@{alias} → {result.get('version')} (release stopped)")


def alias_history(
    ctx: typer.Context,
    target: Annotated[
        str,
        typer.Argument(metavar="NAME|NAME@ALIAS", help="Every alias of the model NAME, or one alias."),
    ],
    json_out: JsonFlag = False,
) -> None:
    """Every state of a model's aliases (or of one), oldest first: set, release, promote, rollback,
    remove."""
    instead = f"{target}@{ctx.args[0]}" if len(ctx.args) == 1 and "@" not in target else "NAME@ALIAS"
    refuse_old_form(ctx.args, "alias history NAME|NAME@ALIAS", f"modelport alias history {instead}")
    name, alias = (model_name(target), None) if "@" not in target else alias_ref(target)
    entries = _with(lambda registry, _: registry.store.releases.history(name, alias))
    if json_out:
        print_json([e.to_dict() for e in entries])
        return
    table = Table(title=f"{name} alias history")
    for column in ("#", "at", "alias", "action", "version", "canary", "shadow", "actor"):
        table.add_column(column)
    for e in entries:
        table.add_row(
            str(e.id),
            f"{e.at:%Y-%m-%d %H:%M:%S}",
            e.alias,
            e.action,
            "—" if e.version is None else str(e.version),
            "—" if e.state.get("canary") is None else f"{e.state['canary']} ({e.state.get('weight'):g} %)",
            "—" if e.state.get("shadow") is None else str(e.state["shadow"]),
            e.actor,
        )
    console.print(table)


@approvals_app.command("list")
def approvals_list(
    status_filter: Annotated[
        str | None, typer.Option("--status", help="pending, applied, rejected …")
    ] = "pending",
    json_out: JsonFlag = False,
) -> None:
    """Changes waiting for (or decided by) a second key."""
    changes = _with(lambda registry, _: registry.store.releases.changes(status=status_filter))
    if json_out:
        print_json([c.to_dict() for c in changes])
        return
    table = Table(title="changes")
    for column in ("id", "model@alias", "action", "payload", "requested by", "at", "status"):
        table.add_column(column, no_wrap=column not in ("payload", "at"))
    for c in changes:
        table.add_row(
            str(c.id),
            f"{c.model}@{c.alias}",
            c.action,
            fields(c.payload, most=6, width=60),
            c.requested_by,
            f"{c.requested_at:%Y-%m-%d %H:%M}",
            c.status,
        )
    console.print(table)


@approvals_app.command("approve")
def approvals_approve(
    change: Annotated[int, typer.Argument(metavar="ID", help="The change's id.", min=1)],
    json_out: JsonFlag = False,
) -> None:
    """Approve another key's change and apply it."""
    result = _with(lambda registry, who: ReleaseManager(registry).approve(change, actor=who))
    _show_change(result, json_out, f"change {change} approved and applied")


@approvals_app.command("reject")
def approvals_reject(
    change: Annotated[int, typer.Argument(metavar="ID", help="The change's id.", min=1)],
    reason: Annotated[str | None, typer.Option("--reason", help="Why (audited).")] = None,
    json_out: JsonFlag = False,
) -> None:
    """Reject another key's change."""
    result = _with(lambda registry, who: ReleaseManager(registry).reject(change, actor=who, reason=reason))
    _show_change(result, json_out, f"change {change} rejected")


def retention(
    name: ModelNameArg,
    keep_last: Annotated[
        int | None, typer.Option("--keep-last", help="Always keep the newest N versions.")
    ] = None,
    keep_days: Annotated[
        float | None, typer.Option("--keep-days", help="Keep what an alias pointed at within D days.")
    ] = None,
    legal_hold: Annotated[
        bool | None, typer.Option("--legal-hold/--no-legal-hold", help="Keep every version while held.")
    ] = None,
    json_out: JsonFlag = False,
) -> None:
    """Show or set a model's retention policy. It says what `modelport gc` may archive."""
    model_name(name)

    def work(registry: "Registry", who: str) -> RetentionPolicy | None:
        current = registry.store.releases.retention(name)
        if keep_last is None and keep_days is None and legal_hold is None:
            return current
        base = current or RetentionPolicy()
        policy = RetentionPolicy(
            keep_last=base.keep_last if keep_last is None else keep_last,
            keep_days=base.keep_days if keep_days is None else keep_days,
            legal_hold=base.legal_hold if legal_hold is None else legal_hold,
        )
        registry.store.releases.set_retention(name, policy, actor=who)
        return policy

    policy = _with(work)
    if json_out:
        print_json(None if policy is None else policy.to_dict())
    elif policy is None:
        console.print(f"{name} has no retention policy: `modelport gc` leaves it alone")
    else:
        console.print(
            f"{name}: keep the newest {policy.keep_last}, anything an alias pointed at within "
            f"{policy.keep_days:g} days{'; legal hold: nothing is archived' if policy.legal_hold else ''}"
        )


def gc(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List what would be archived; change nothing.")
    ] = False,
    model: Annotated[str | None, typer.Option("--model", help="Only this model.")] = None,
    json_out: JsonFlag = False,
) -> None:
    """Archive versions that retention no longer keeps. Their artifacts are freed, records kept."""
    if model is not None:
        model_name(model)
    with shown_progress("gc") as progress:
        result = _with(
            lambda registry, who: ReleaseManager(registry).gc(
                actor=who, dry_run=dry_run, model=model, progress=progress
            )
        )
    if json_out:
        print_json(result)
        return
    verb = "would archive" if dry_run else "archived"
    if not result["models"]:
        console.print(
            "no model has a retention policy (`modelport retention NAME --keep-last N --keep-days D`)"
        )
    for entry in result["models"]:
        versions = ", ".join(str(n) for n in entry["archive"]) or "nothing"
        freed = "" if dry_run or not entry.get("freed_bytes") else f" ({entry['freed_bytes']:,} bytes freed)"
        console.print(f"{entry['model']}: {verb} {versions}{freed}")


def label(
    ctx: typer.Context,
    ref: RefArg,
    text: Annotated[str, typer.Argument(metavar="LABEL", help="Semantic version, e.g. 2.1.0.")],
    json_out: JsonFlag = False,
) -> None:
    """Give a version a semantic version label. E.g. `label credit-rating@7 2.1.0`; then NAME@LABEL
    (credit-rating@2.1.0) refers to it."""
    old = [ref, text, *ctx.args]
    instead = f"{old[0]}@{old[1]} {old[2]}" if len(old) == 3 and "@" not in old[0] else "NAME@7 2.1.0"
    refuse_old_form(ctx.args, "label REF LABEL", f"modelport label {instead}")
    parsed = parse_ref(ref)

    def work(registry: "Registry", who: str) -> tuple[int, str]:
        number = registry.get(parsed).number
        return number, registry.store.releases.set_label(parsed.name, number, text, actor=who)

    version, result = _with(work)
    if json_out:
        print_json({"model": parsed.name, "version": version, "label": result})
    else:
        console.print(f"{parsed.name}@{result} → {version}")
