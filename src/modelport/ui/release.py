"""The console's release page, ``/ui/models/{name}/aliases/{alias}/release``: each arm's numbers since the
release started, refreshed every two seconds, and the forms that start a canary, promote, roll back and
stop (docs/releases.md, docs/console.md).

A thin adapter over the API's own calls: the numbers are :meth:`ReleaseManager.status` (as
``GET /api/v1/…/release``), every change is the :class:`ReleaseManager` method the API's route calls,
under the signed-in person's actor — so approvals, the promotion gate, verification and the audit
apply as they do there; a change that needs a second person shows as pending. The forms are drawn for
``publish`` only and refused anyway without it (routes.py checks the permission and the CSRF token
before a handler runs). A model outside the key's patterns is a 404, as on the API.

The live numbers are a fragment (``…/release/arms``) that htmx fetches every two seconds into the page
(``hx-get`` + ``hx-trigger``): no inline script, so the console's CSP stays strict.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from modelport.errors import InvalidInput, ModelNotFound
from modelport.registry.names import check_alias_name, check_version_number
from modelport.releases.manager import ReleaseManager
from modelport.releases.policy import CANARY, PRIMARY, SHADOW, UNKEYED
from modelport.tables import escape_controls

if TYPE_CHECKING:
    from modelport.ui.routes import Console, Page, UIRequest

__all__ = ["AT", "arms", "page", "promote", "rollback", "start", "stop"]

AT = r"/aliases/(?P<alias>[^/]{1,100})/release"  # after the model's path, in routes.py's table
_ARM_ORDER = (PRIMARY, CANARY, UNKEYED, SHADOW)
_REASON = 500  # characters of a rollback's reason kept (the store keeps as many)
_DONE = {"applied": "The change was applied.", "pending": "The change waits for a second person's approval."}


def _target(request: UIRequest) -> tuple[str, str]:
    """The model and alias of the URL, refused as the API refuses them; outside the key's patterns the
    model does not exist (404), whatever the alias."""
    name = request.params["name"]
    if not request.principal.sees(name):
        raise ModelNotFound(f"no model named {name!r}")
    return name, check_alias_name(request.params["alias"])


def _status(console: Console, name: str, alias: str) -> dict[str, Any]:
    """``ReleaseManager.status`` with live accuracy as the API's status route gets it: from the monitor's
    child process (no pandas in a serving worker), only once labels have come at all."""
    app = console.app
    monitor = app.worker.monitor

    def accuracy(model: str) -> dict[str, Any]:
        if monitor is None or not app.worker.registry.store.monitoring.has_feedback(model):
            return {}
        return monitor.report(model, accuracy_only=True)

    return ReleaseManager(app.worker.registry).status(name, alias, accuracy)


def _rows(status: dict[str, Any]) -> list[dict[str, Any]]:
    release = status["release"]
    if release is None:
        return []
    found = release["arms"]
    rows = []
    for arm in _ARM_ORDER:
        numbers = found.get(arm)
        if numbers is None:
            continue
        accuracy = numbers.get("live_accuracy") or {}
        rows.append(
            {
                "arm": arm,
                "version": numbers.get("version"),
                "share": numbers.get("share"),
                "requests": numbers["requests"],
                "errors": numbers["errors"],
                "p50": numbers["p50_ms"],
                "p99": numbers["p99_ms"],
                "agreement": numbers.get("agreement"),
                "accuracy": accuracy.get("accuracy"),
                "labelled": accuracy.get("rows"),
            }
        )
    return rows


async def _view(console: Console, request: UIRequest, template: str) -> Page:
    name, alias = _target(request)
    registry = console.app.worker.registry
    status = await asyncio.to_thread(_status, console, name, alias)
    latest = (await asyncio.to_thread(registry.model, name)).latest_version
    release = status["release"]
    done = request.arg("done")
    return console.render(
        request,
        template,
        model=name,
        alias=alias,
        version=status["version"],
        release=release,
        # who started it: an OpenID identity is the provider's text, shown without terminal controls
        started_by=escape_controls(release["started_by"]) if release else "",
        rows=_rows(status),
        latest=latest,
        may_publish=request.principal.may("publish"),
        done=_DONE.get(done, ""),
    )


async def page(console: Console, request: UIRequest) -> Page:
    return await _view(console, request, "release.html")


async def arms(console: Console, request: UIRequest) -> Page:
    """The numbers alone, for the page's two-second refresh."""
    return await _view(console, request, "_release_arms.html")


def _number(request: UIRequest, field: str) -> int:
    text = request.form.get(field, "").strip()
    if not text.isdigit() or len(text) > 9:
        raise InvalidInput(f"choose a version number for the {field}")
    return check_version_number(int(text))


async def start(console: Console, request: UIRequest) -> Page:
    """Start a canary or change its share: the API's ``PUT …/release`` with ``canary`` and ``weight``.
    (A shadow, a sticky key and automatic rollback are started from the API or the CLI; their numbers
    show here all the same.)"""
    name, alias = _target(request)
    canary = _number(request, "canary")
    weight = request.form.get("weight", "").strip()[:20] or None
    manager = ReleaseManager(console.app.worker.registry)
    result = await asyncio.to_thread(
        lambda: manager.start(name, alias, actor=request.principal.actor, canary=canary, weight=weight)
    )
    return _back(name, alias, result)


async def promote(console: Console, request: UIRequest) -> Page:
    name, alias = _target(request)
    manager = ReleaseManager(console.app.worker.registry)
    result = await asyncio.to_thread(lambda: manager.promote(name, alias, actor=request.principal.actor))
    return _back(name, alias, result)


async def rollback(console: Console, request: UIRequest) -> Page:
    name, alias = _target(request)
    reason = request.form.get("reason", "").strip()[:_REASON] or None
    manager = ReleaseManager(console.app.worker.registry)
    result = await asyncio.to_thread(
        lambda: manager.rollback(name, alias, actor=request.principal.actor, reason=reason)
    )
    return _back(name, alias, result)


async def stop(console: Console, request: UIRequest) -> Page:
    name, alias = _target(request)
    manager = ReleaseManager(console.app.worker.registry)
    result = await asyncio.to_thread(lambda: manager.stop(name, alias, actor=request.principal.actor))
    return _back(name, alias, result)


def _back(name: str, alias: str, result: dict[str, Any]) -> Page:
    # imported here: routes.py imports this module for its route table
    from modelport.ui.routes import Page

    done = "pending" if result.get("status") == "pending" else "applied"
    to = f"/ui/models/{quote(name, safe='')}/aliases/{quote(alias, safe='')}/release?done={done}"
    return Page(b"", 303, b"text/plain", ((b"location", to.encode()),))
