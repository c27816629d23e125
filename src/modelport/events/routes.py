"""``/api/v1/webhooks``: subscriptions and their deliveries over HTTP (admin only; docs/webhooks.md).

Thin translations to :class:`~modelport.events.store.WebhookStore`, run off the event loop. The
subscription's secret is in the answer to its creation and nowhere else.
"""

from __future__ import annotations

import asyncio
import re
from typing import TYPE_CHECKING, Any

from modelport.errors import InvalidInput
from modelport.events.store import WebhookStore
from modelport.events.urls import UrlPolicy, check_url
from modelport.serving.http import Request, Response, json_response
from modelport.serving.management import _document, _one

if TYPE_CHECKING:
    from modelport.serving.rest import RestApp

__all__ = ["ROUTES"]

_WEBHOOK = r"(?P<webhook>wh_[0-9a-f]{16})"
_DELIVERY = r"(?P<delivery>dlv_[0-9a-f]{16})"


def _store(app: RestApp) -> WebhookStore:
    return WebhookStore(app.worker.registry.store)


async def create_webhook(app: RestApp, request: Request) -> Response:
    document = _document(request, {"url", "actions", "models", "enabled"})
    url = document.get("url")
    if not isinstance(url, str):
        raise InvalidInput('"url" is required: the https URL to send events to')
    enabled = document.get("enabled", True)
    if not isinstance(enabled, bool):
        raise InvalidInput('"enabled" must be true or false')
    policy = UrlPolicy.from_settings(app.worker.registry.settings)
    await asyncio.to_thread(check_url, url, policy)  # resolves the host: off the loop
    subscription, secret = await asyncio.to_thread(
        _store(app).create,
        url=url,
        actions=document.get("actions"),
        models=document.get("models"),
        enabled=enabled,
        actor=request.principal.actor,
    )
    return json_response({"webhook": subscription.to_dict(), "secret": secret}, 201)


async def list_webhooks(app: RestApp, request: Request) -> Response:
    subscriptions = await asyncio.to_thread(_store(app).subscriptions)
    return json_response({"webhooks": [s.to_dict() for s in subscriptions]})


async def remove_webhook(app: RestApp, request: Request) -> Response:
    gone = await asyncio.to_thread(
        _store(app).remove, request.params["webhook"], actor=request.principal.actor
    )
    return json_response({"webhook": gone.to_dict()})


async def update_webhook(app: RestApp, request: Request) -> Response:
    """``{"enabled": false}`` pauses a subscription, ``true`` resumes it (from now on)."""
    document = _document(request, {"enabled"})
    if set(document) != {"enabled"} or not isinstance(document["enabled"], bool):
        raise InvalidInput('send {"enabled": true} or {"enabled": false}')
    changed = await asyncio.to_thread(
        _store(app).set_enabled, request.params["webhook"], document["enabled"], actor=request.principal.actor
    )
    return json_response({"webhook": changed.to_dict()})


async def list_deliveries(app: RestApp, request: Request) -> Response:
    status = _one(request, "status")
    if status not in (None, "pending", "delivered", "dead"):
        raise InvalidInput("status must be pending, delivered or dead")
    limit_text = _one(request, "limit") or "100"
    if not re.fullmatch(r"\d{1,4}", limit_text) or int(limit_text) < 1:
        raise InvalidInput("limit must be a number from 1 to 9999")
    deliveries = await asyncio.to_thread(
        _store(app).deliveries, request.params["webhook"], status=status, limit=int(limit_text)
    )
    return json_response({"deliveries": [d.to_dict() for d in deliveries]})


async def retry_delivery(app: RestApp, request: Request) -> Response:
    delivery = await asyncio.to_thread(
        _store(app).retry,
        request.params["webhook"],
        request.params["delivery"],
        actor=request.principal.actor,
    )
    return json_response({"delivery": delivery.to_dict()})


ROUTES: tuple[tuple[str, re.Pattern[str], Any, bool, str | None], ...] = (
    ("POST", re.compile(r"/api/v1/webhooks"), create_webhook, False, "admin"),
    ("GET", re.compile(r"/api/v1/webhooks"), list_webhooks, False, "admin"),
    ("DELETE", re.compile(rf"/api/v1/webhooks/{_WEBHOOK}"), remove_webhook, False, "admin"),
    ("PATCH", re.compile(rf"/api/v1/webhooks/{_WEBHOOK}"), update_webhook, False, "admin"),
    ("GET", re.compile(rf"/api/v1/webhooks/{_WEBHOOK}/deliveries"), list_deliveries, False, "admin"),
    (
        "POST",
        re.compile(rf"/api/v1/webhooks/{_WEBHOOK}/deliveries/{_DELIVERY}/retry"),
        retry_delivery,
        False,
        "admin",
    ),
)
