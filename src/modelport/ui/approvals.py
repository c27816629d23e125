"""The console's approvals page, ``/ui/approvals``: changes to protected aliases that wait for a second
person, and the approve and reject forms (docs/releases.md, "Approvals").

The same calls as ``/api/v1/approvals`` (``publish``, like the API): the list is
:meth:`ReleaseStore.changes`, a decision is :meth:`ReleaseManager.approve` or :meth:`~ReleaseManager.reject`
under the signed-in person's actor. The four-eyes rule lives there, not here: a requester deciding their
own change is refused (403, audited as ``approval.refused``) exactly as on the API. Here the buttons for
one's own change are simply not drawn. Changes outside the key's model patterns are neither listed nor
decidable (404, as if they did not exist).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from modelport.errors import NotFound
from modelport.releases.manager import ReleaseManager
from modelport.tables import escape_controls

if TYPE_CHECKING:
    from modelport.registry.service import Registry
    from modelport.releases.store import PendingChange
    from modelport.ui.routes import Console, Page, UIRequest

__all__ = ["GateStatus", "approve", "gate_status", "page", "reject"]

_REASON = 500  # characters of a rejection's reason kept


@dataclass(frozen=True, slots=True)
class GateStatus:
    """Whether the promotion gate lets a pending change through, as it stands now (it runs again when
    the change is applied)."""

    state: str  # "open" (no gate on the alias), "passes", "overridden", "blocked"
    detail: str


def _gated_version(registry: Registry, change: PendingChange) -> int | None:
    """The version a change would send the alias's answers to (a shadow answers no one: not gated)."""
    payload = change.payload
    if change.action == "set":
        return int(payload["version"])
    if change.action == "release" and payload.get("canary") is not None:
        return int(payload["canary"])
    if change.action == "promote":
        current = registry.store.releases.release(change.model, change.alias)
        return None if current is None else current.canary
    return None


def gate_status(registry: Registry, change: PendingChange, fingerprint: str) -> GateStatus:
    """The promotion gate's answer for ``change`` in the environment ``fingerprint``, read only (the
    gate itself, :meth:`Registry.check_gate`, audits refusals; a page view must not)."""
    number = _gated_version(registry, change)
    if number is None or change.alias not in registry.store.protected(change.model):
        return GateStatus("open", "no promotion gate on this alias")
    if registry.store.validation.has_passing_report(change.model, number, fingerprint):
        return GateStatus("passes", f"version {number} has a passing validation report here")
    override = change.payload.get("override_reason")
    if override:
        return GateStatus("overridden", f"version {number} has no passing report; overridden: {override}")
    return GateStatus("blocked", f"version {number} has no passing validation report for this environment")


def _summary(change: PendingChange) -> str:
    shown = {k: v for k, v in change.payload.items() if v is not None and k != "override_reason"}
    parts = ", ".join(f"{k} {v}" for k, v in sorted(shown.items()))
    return f"{change.action} ({parts})" if parts else change.action


def _rows(registry: Registry, request: UIRequest) -> list[dict[str, Any]]:
    from modelport.environment import fingerprint

    here = fingerprint()
    principal = request.principal
    rows = []
    for change in registry.store.releases.changes(status="pending"):
        if not principal.sees(change.model):
            continue
        gate = gate_status(registry, change, here)
        rows.append(
            {
                "id": change.id,
                "target": escape_controls(f"{change.model}@{change.alias}"),
                "change": escape_controls(_summary(change)),
                "requested_by": escape_controls(change.requested_by),
                "requested_at": change.requested_at,
                "reason": escape_controls(str(change.payload.get("override_reason") or "")),
                "gate": GateStatus(gate.state, escape_controls(gate.detail)),
                "own": change.requested_by == principal.actor,
            }
        )
    return rows


async def page(console: Console, request: UIRequest) -> Page:
    registry = console.app.worker.registry
    rows = await asyncio.to_thread(_rows, registry, request)
    done = request.arg("done")
    return console.render(
        request,
        "approvals.html",
        rows=rows,
        may_decide=request.principal.may("publish"),
        done=done if done in ("applied", "rejected") else "",
    )


async def _visible_change(console: Console, request: UIRequest) -> int:
    change_id = int(request.params["change"])
    change = await asyncio.to_thread(console.app.worker.registry.store.releases.change, change_id)
    if not request.principal.sees(change.model):
        raise NotFound(f"no change {change_id}")  # like a missing one: scopes reveal nothing
    return change_id


async def approve(console: Console, request: UIRequest) -> Page:
    change_id = await _visible_change(console, request)
    manager = ReleaseManager(console.app.worker.registry)
    await asyncio.to_thread(manager.approve, change_id, actor=request.principal.actor)
    return _back("applied")


async def reject(console: Console, request: UIRequest) -> Page:
    change_id = await _visible_change(console, request)
    reason = request.form.get("reason", "").strip()[:_REASON] or None
    manager = ReleaseManager(console.app.worker.registry)
    await asyncio.to_thread(manager.reject, change_id, actor=request.principal.actor, reason=reason)
    return _back("rejected")


def _back(done: str) -> Page:
    # imported here: routes.py imports this module for its route table
    from modelport.ui.routes import Page

    return Page(b"", 303, b"text/plain", ((b"location", f"/ui/approvals?done={done}".encode()),))
