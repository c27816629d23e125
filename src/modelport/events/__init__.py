"""Registry events and webhooks (docs/webhooks.md).

Every audited change is an event. Admins subscribe URLs (with action and model filters); the
dispatcher turns new audit records into delivery rows and sends them, signed, retried with backoff,
dead-lettered after too many failures.

- ``urls``: where a webhook may point (the SSRF guard);
- ``store``: subscriptions, deliveries (a leased job queue) and attempts in the registry database;
- ``dispatch``: signing, the pinned POST, backoff; run by every worker's background duties;
- ``routes``: ``/api/v1/webhooks`` (admin).
"""

from __future__ import annotations

from modelport.events.dispatch import Dispatcher, body_of, sign
from modelport.events.store import Delivery, Subscription, WebhookStore
from modelport.events.urls import UrlPolicy, check_url

__all__ = [
    "Delivery",
    "Dispatcher",
    "Subscription",
    "UrlPolicy",
    "WebhookStore",
    "body_of",
    "check_url",
    "sign",
]
