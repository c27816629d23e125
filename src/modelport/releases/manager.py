"""Release operations (docs/releases.md) over the registry: the one place that decides whether a change
waits for approval, passes the promotion gate, is verified before it is stored, and how approved
changes are applied. The CLI and ``/api/v1`` both call this; it knows nothing of HTTP.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from modelport.errors import (
    AliasNotFound,
    Conflict,
    InvalidInput,
    ModelportError,
    NotFound,
    StorageFailure,
    StoreNotReady,
    VersionArchived,
)
from modelport.progress import Progress, no_progress
from modelport.registry.names import check_alias_name, check_version_number
from modelport.releases.policy import CANARY, AutoRollback, Release, Sticky, parse_weight
from modelport.releases.retention import RetentionPolicy, archivable
from modelport.releases.stats import BUCKET_SECONDS, summarise

if TYPE_CHECKING:
    from modelport.registry.service import Registry

__all__ = ["ReleaseManager"]


class ReleaseManager:
    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.releases = registry.store.releases

    # -- changes that may need a second key ------------------------------------------------------

    def set_alias(
        self,
        name: str,
        alias: str,
        number: int,
        *,
        actor: str,
        override_reason: str | None = None,
        allow_incompatible: bool = False,
    ) -> dict[str, Any]:
        payload = {
            "version": check_version_number(number),
            "override_reason": override_reason,
            "allow_incompatible": allow_incompatible or None,
        }
        return self._change(name, alias, "set", payload, actor)

    def remove_alias(self, name: str, alias: str, *, actor: str) -> dict[str, Any]:
        return self._change(name, alias, "remove", {}, actor)

    def start(
        self,
        name: str,
        alias: str,
        *,
        actor: str,
        canary: int | None = None,
        weight: Any = None,
        sticky_by: str | None = None,
        shadow: int | None = None,
        auto_rollback: AutoRollback | dict[str, Any] | None = None,
        override_reason: str | None = None,
        allow_incompatible: bool = False,
    ) -> dict[str, Any]:
        """Start or change a release (a canary with a weight, a shadow, or both: of two different
        versions)."""
        check_alias_name(alias)
        if canary is None and (weight is not None or sticky_by is not None):
            raise InvalidInput("--weight and --sticky-by go with --canary")
        if canary is None and shadow is None:
            raise InvalidInput(
                "a release needs a canary (--canary N --weight P) and/or a shadow (--shadow N)"
            )
        if canary is not None:
            check_version_number(canary)
            if weight is None:
                raise InvalidInput(
                    "a canary needs a weight: the percentage of traffic it takes (--weight 10)"
                )
            weight = parse_weight(weight)
        if shadow is not None:
            check_version_number(shadow)
            if shadow == canary:
                raise InvalidInput(
                    f"version {shadow} cannot be both the canary and the shadow: a shadow gets copies of "
                    f"the requests the primary answers, so version {shadow} would answer its share live and "
                    "score the rest as copies, its numbers split over two arms that share one live "
                    f"accuracy. To compare it with the primary on every request, shadow it first (--shadow "
                    f"{shadow}); then make it the canary (--canary {shadow} --weight P)"
                )
        if isinstance(auto_rollback, dict):
            auto_rollback = AutoRollback.of(auto_rollback)
        if auto_rollback is not None and canary is None:
            raise InvalidInput("--auto-rollback watches a canary: add --canary")
        if sticky_by is not None:
            assert canary is not None
            inputs = self.registry.get(f"{name}@{canary}").signature.get("inputs", [])
            sticky_by = str(Sticky.parse(sticky_by, [f["name"] for f in inputs]))
        payload = {
            "canary": canary,
            "weight": weight,
            "sticky_by": sticky_by,
            "shadow": shadow,
            "auto_rollback": None if auto_rollback is None else auto_rollback.to_dict(),
            "override_reason": override_reason,
            "allow_incompatible": allow_incompatible or None,
        }
        return self._change(name, alias, "release", payload, actor)

    def promote(
        self,
        name: str,
        alias: str,
        *,
        actor: str,
        override_reason: str | None = None,
        allow_incompatible: bool = False,
    ) -> dict[str, Any]:
        payload = {"override_reason": override_reason, "allow_incompatible": allow_incompatible or None}
        return self._change(name, alias, "promote", payload, actor)

    def stop(self, name: str, alias: str, *, actor: str) -> dict[str, Any]:
        """Withdraw the canary and shadow; never waits for approval (it returns to an approved state)."""
        self.releases.stop(name, alias, actor=actor)
        return {"status": "applied", "action": "stop", "version": self._primary(name, alias)}

    def rollback(self, name: str, alias: str, *, actor: str, reason: str | None = None) -> dict[str, Any]:
        """Withdraw the running release, or return the alias to its previous version — at once, without
        approval or promotion gate: it restores a state that was approved and served."""
        result = self.releases.rollback(name, alias, actor=actor, reason=reason)
        return {"status": "applied", "action": "rollback", **result}

    def _change(
        self, name: str, alias: str, action: str, payload: dict[str, Any], actor: str
    ) -> dict[str, Any]:
        check_alias_name(alias)
        warnings = self._narrower(name, alias, action, payload)  # against the alias as it is now
        if self.releases.requires_approval(name, alias):
            # Refuse now what approval could never apply: the approver can add no override, and the
            # gate and the signature check run again when the change is applied.
            self._check(name, alias, action, payload, actor)
            change = self.releases.request(name, alias, action, _stored(payload), actor=actor)
            result: dict[str, Any] = {"status": "pending", "change": change.to_dict()}
        else:
            self._apply(name, alias, action, payload, actor)
            result = {"status": "applied", "action": action, "version": self._primary(name, alias)}
        return {**result, "warnings": warnings} if warnings else result

    def _check(self, name: str, alias: str, action: str, payload: dict[str, Any], actor: str) -> None:
        """What can be checked before a change waits for approval: the versions exist and are not
        archived, the promotion gate lets them through, and they can take the alias's traffic."""
        for key in ("version", "canary", "shadow"):
            number = payload.get(key)
            if isinstance(number, int):
                record = self.registry.get(f"{name}@{number}")
                if record.archived_at is not None:
                    raise VersionArchived(f"{record.ref} is archived: it can no longer serve")
        if action == "promote":
            current = self.releases.release(name, alias)
            if current is None:
                raise NotFound(f"no release is running on {name}@{alias}")
            if current.canary is None:
                raise Conflict(f"the release on {name}@{alias} has no canary to promote (it only shadows)")
        for arm, number in self._targets(name, alias, action, payload).items():
            self._admit(name, alias, arm, number, payload, actor)

    def _targets(self, name: str, alias: str, action: str, payload: dict[str, Any]) -> dict[str, int]:
        """The versions a change sends the alias's traffic to, by arm (``alias``, ``canary``, ``shadow``)."""
        if action == "set":
            return {"alias": int(payload["version"])}
        if action == "release":
            return {arm: int(payload[arm]) for arm in ("canary", "shadow") if payload.get(arm) is not None}
        if action == "promote":
            current = self.releases.release(name, alias)
            if current is not None and current.canary is not None:
                return {"alias": current.canary}
        return {}

    def _admit(
        self, name: str, alias: str, arm: str, number: int, payload: dict[str, Any], actor: str
    ) -> dict[str, Any]:
        """The promotion gate (for what clients are answered by: the alias and a canary, not a shadow)
        and the signature check for one target; returns the audit note of the overrides used."""
        note: dict[str, Any] = {}
        if arm != "shadow":
            gate = self.registry.check_gate(
                name, alias, number, actor=actor, override_reason=payload.get("override_reason")
            )
            note.update(gate or {})
        allowed = self.registry.check_compatible(
            name,
            alias,
            number,
            actor=actor,
            allow_incompatible=bool(payload.get("allow_incompatible")),
            arm=arm,
        )
        return {**note, **(allowed or {})}

    def _narrower(self, name: str, alias: str, action: str, payload: dict[str, Any]) -> list[str]:
        """Warnings: values the alias's version takes unflagged that a target flags (or refuses, under
        the model's reject policy)."""
        if action not in ("set", "release"):
            return []  # a promoted canary was reported on when its release started
        policy = self.registry.store.get_model(name).on_violation
        verb = "refuses" if policy == "reject" else "flags"
        warnings = []
        for arm, number in self._targets(name, alias, action, payload).items():
            found = self.registry.compatibility(name, alias, number)
            if found is not None and found[1].narrower:
                current, differences = found
                role = "" if arm == "alias" else f" ({arm})"
                warnings.append(
                    f"version {number}{role} {verb} values version {current} takes without a flag "
                    f"(the model's policy is {policy}): " + ", ".join(differences.narrower)
                )
        return warnings

    def _apply(self, name: str, alias: str, action: str, payload: dict[str, Any], actor: str) -> None:
        registry = self.registry
        if action == "set":
            registry.set_alias(
                name,
                alias,
                int(payload["version"]),
                actor=actor,
                override_reason=payload.get("override_reason"),
                allow_incompatible=bool(payload.get("allow_incompatible")),
            )
        elif action == "remove":
            registry.remove_alias(name, alias, actor=actor)
        elif action == "release":
            canary, shadow = payload.get("canary"), payload.get("shadow")
            note: dict[str, Any] = {}
            for arm, target in self._targets(name, alias, action, payload).items():
                admitted = self._admit(name, alias, arm, target, payload, actor)
                overridden = {**note.get("allow_incompatible", {}), **admitted.pop("allow_incompatible", {})}
                note.update(admitted)
                if overridden:
                    note["allow_incompatible"] = overridden
            for number in (canary, shadow):
                if number is not None:
                    registry.verify(name, number)
            rule = payload.get("auto_rollback")
            self.releases.start(
                name,
                alias,
                canary=canary,
                weight=float(payload["weight"]) if canary is not None else 0.0,
                sticky=None if payload.get("sticky_by") is None else Sticky.parse(payload["sticky_by"]),
                shadow=shadow,
                auto_rollback=None if rule is None else AutoRollback.of(rule),
                actor=actor,
                note=note,
            )
        elif action == "promote":
            current = self.releases.release(name, alias)
            if current is None:
                raise NotFound(f"no release is running on {name}@{alias}")
            if current.canary is None:
                raise Conflict(f"the release on {name}@{alias} has no canary to promote (it only shadows)")
            note = self._admit(name, alias, "alias", current.canary, payload, actor)
            self.releases.promote(name, alias, actor=actor, note=note)
        else:
            raise InvalidInput(f"unknown change {action!r}")

    def _primary(self, name: str, alias: str) -> int | None:
        return self.registry.store.get_model(name).aliases.get(alias)

    # -- approvals ------------------------------------------------------------------------------

    def approve(self, change_id: int, *, actor: str) -> dict[str, Any]:
        """Approve another key's change and apply it (through the gate and warm-up, as its requester
        would have). A change that fails to apply is marked ``failed`` with the reason."""
        change = self.releases.claim(change_id, approve=True, actor=actor, reason=None)
        try:
            self._apply(
                change.model, change.alias, change.action, change.payload, f"{change.requested_by}+{actor}"
            )
        except Exception as exc:
            # Publishers read this detail: a database failure's text names the database (host,
            # file), so it is stored as what a client may be told, never as the raw message.
            if isinstance(exc, StoreNotReady | StorageFailure):
                detail = "the registry database was unavailable or refused the change"
            elif isinstance(exc, ModelportError):
                detail = str(exc)
            else:
                detail = f"internal error ({type(exc).__name__})"
            self.releases.finish(change_id, applied=False, detail=detail, actor=actor)
            raise
        self.releases.finish(change_id, applied=True, detail="", actor=actor)
        return {"status": "applied", "change": self.releases.change(change_id).to_dict()}

    def reject(self, change_id: int, *, actor: str, reason: str | None) -> dict[str, Any]:
        change = self.releases.claim(change_id, approve=False, actor=actor, reason=reason)
        return {"status": "rejected", "change": change.to_dict()}

    # -- status ---------------------------------------------------------------------------------

    def status(
        self, name: str, alias: str, accuracy: Callable[[str], dict[str, Any]] | None = None
    ) -> dict[str, Any]:
        """The alias, its running release and each arm's numbers since the release started. Live
        accuracy per version comes from ``accuracy`` (an accuracy report of the model; by default
        computed here — a server passes its monitor's child process)."""
        check_alias_name(alias)
        model = self.registry.store.get_model(name)
        if alias not in model.aliases:
            raise AliasNotFound(f"model {name!r} has no alias {alias!r}")
        release = self.releases.release(name, alias)
        document: dict[str, Any] = {
            "model": name,
            "alias": alias,
            "version": model.aliases[alias],
            "release": None,
        }
        if release is None:
            return document
        arms = summarise(self.releases.stats(release.release_id))
        versions = {"primary": release.primary, "canary": release.canary, "unkeyed": release.primary}
        versions["shadow"] = release.shadow
        by_version = self._accuracy(name, accuracy)
        for arm, numbers in arms.items():
            numbers["version"] = versions.get(arm)
            numbers["live_accuracy"] = by_version.get(numbers["version"])
        document["release"] = {**release.state(), "arms": arms}
        return document

    def _accuracy(self, name: str, accuracy: Callable[[str], dict[str, Any]] | None) -> dict[int, Any]:
        """Live accuracy per version from feedback (when the model logs predictions and labels came)."""
        try:
            if accuracy is not None:
                report = accuracy(name)
            else:
                from modelport.monitoring.monitor import accuracy_report

                report = accuracy_report(self.registry.settings.home.resolve(), self.registry, name)
        except Exception:  # no log, no labels, or no pyarrow: no accuracy, not a failed status
            return {}
        return {
            entry["version"]: {k: entry.get(k) for k in ("rows", "accuracy", "log_loss")}
            for entry in report.get("versions", [])
        }

    # -- automatic rollback ---------------------------------------------------------------------

    def check_auto_rollback(
        self, releases: dict[str, dict[str, Release]], now: float | None = None
    ) -> list[str]:
        """Roll back every release whose canary broke its bound over its window; returns what was
        rolled back (``model@alias``). Safe to call from every worker: the rollback only happens if the
        judged release is still the one running."""
        now = time.time() if now is None else now
        done = []
        for name, by_alias in releases.items():
            for alias, release in by_alias.items():
                rule = release.auto_rollback
                if rule is None or release.canary is None:
                    continue
                since = int(now - rule.window) // BUCKET_SECONDS
                rows = [r for r in self.releases.stats(release.release_id, since) if r[0] == CANARY]
                canary = summarise(rows).get(CANARY)
                if canary is None:
                    continue
                why = rule.exceeded(canary["requests"], canary["errors"], canary["p99_ms"])
                if why is None:
                    continue
                result = self.releases.rollback(
                    name, alias, actor="auto-rollback", release_id=release.release_id, reason=why
                )
                if result["action"] != "none":
                    done.append(f"{name}@{alias}")
        return done

    # -- retention ------------------------------------------------------------------------------

    def gc(
        self,
        *,
        actor: str,
        dry_run: bool,
        model: str | None = None,
        now: float | None = None,
        progress: Progress = no_progress,
    ) -> dict[str, Any]:
        """Archive what every model's retention policy allows (models without a policy are left alone).
        ``dry_run`` lists without changing anything; ``progress`` hears each model as it starts."""
        now = time.time() if now is None else now
        names = [model] if model is not None else [m.name for m in self.registry.store.list_models()]
        plan: list[dict[str, Any]] = []
        freed = 0
        for done, name in enumerate(names):
            progress(f"{'planning' if dry_run else 'archiving'} {name}", done, len(names))
            live, history, pinned, policy = self.releases.retention_inputs(name)
            if policy is None:
                continue
            chosen = archivable(live, history, pinned, policy, now)
            entry: dict[str, Any] = {"model": name, "policy": policy.to_dict(), "archive": chosen}
            if chosen and not dry_run:
                result = self.releases.archive(name, chosen, actor=actor, policy=policy)
                entry["archive"] = result["archived"]
                entry["freed_bytes"] = result["freed_bytes"]
                freed += result["freed_bytes"]
                self.registry.artifacts.discard(result["digests"], self.releases.live_digests)
            plan.append(entry)
        return {
            "dry_run": dry_run,
            "at": datetime.fromtimestamp(now, UTC).isoformat(),
            "models": plan,
            "freed_bytes": freed,
        }

    def set_retention(self, name: str, policy: RetentionPolicy, *, actor: str) -> None:
        self.releases.set_retention(name, policy, actor=actor)


def _stored(payload: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in payload.items() if v is not None}
