"""The console's access page, ``/ui/access`` (admins only, like ``/api/v1/keys`` and other keys' usage).

The same calls as the management API (serving/management.py): the keys are :meth:`KeyStore.list_keys`,
the usage rows :meth:`KeyStore.usage` (requests, rows, errors and bytes per key × model × UTC day, as
``/api/v1/usage`` returns them), a new key is :meth:`KeyStore.create` with the API's parsing of expiry,
rate and quota (:func:`parse_duration`, :func:`parse_rate`, :func:`parse_quota`), a revocation is
:meth:`KeyStore.revoke` — each change audited there (``key.create``, ``key.revoke``) under the signed-in
person's actor, then the worker's key ring reloaded at once (the others follow within a second).

The new key's token is shown once, on the page that answers the form (``no-store``, like every page):
never in a URL, never logged, never stored. Revoking the key you are signed in with is allowed, as on
the API; the session then ends on the next request, because sessions re-check the key ring.
"""

from __future__ import annotations

import asyncio
import re
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from modelport.errors import InvalidInput
from modelport.security.keys import ROLES, KeyRecord, parse_duration, parse_quota, parse_rate
from modelport.serving.http import HTTPError
from modelport.tables import escape_controls

if TYPE_CHECKING:
    from modelport.security.store import KeyStore, UsageRow
    from modelport.ui.routes import Console, Page, UIRequest

__all__ = ["KEY_PAGE", "USAGE_DAYS", "USAGE_PAGE", "create_key", "page", "revoke_key", "usage_totals"]

KEY_PAGE = 100  # keys a page
USAGE_PAGE = 200  # daily usage rows a page
USAGE_DAYS = 30  # the usage window when ``since`` is not given
STATES = ("active", "expired", "revoked")
_KEY_ID = re.compile(r"[a-z0-9]{12}")
_SPLIT = re.compile(r"[\s,]+")
_FIELDS = ("name", "role", "models", "expires", "rate", "quota")
_FIELD_MAX = 2000  # characters of a form field echoed back into the form


@dataclass(frozen=True, slots=True)
class UsageTotal:
    """One key's use of one model over the window: the daily rows added up."""

    key_id: str
    model: str
    requests: int
    rows: int
    errors: int
    bytes_in: int
    bytes_out: int
    days: int
    last_day: date


def usage_totals(rows: list[UsageRow]) -> list[UsageTotal]:
    """The daily rows summed per key × model, busiest first."""
    grouped: dict[tuple[str, str], list[UsageRow]] = defaultdict(list)
    for row in rows:
        grouped[(row.key_id, row.model)].append(row)
    totals = [
        UsageTotal(
            key_id,
            model,
            sum(r.requests for r in group),
            sum(r.rows for r in group),
            sum(r.errors for r in group),
            sum(r.bytes_in for r in group),
            sum(r.bytes_out for r in group),
            len(group),
            max(r.day for r in group),
        )
        for (key_id, model), group in grouped.items()
    ]
    return sorted(totals, key=lambda t: (-t.requests, t.key_id, t.model))


def _key_store(console: Console) -> KeyStore:
    keys = console.app.gate.keys
    if keys is None:  # as the API answers
        raise HTTPError(404, "this server runs without keys (--insecure-dev)")
    return keys


def _rate(per_second: float | None) -> str:
    """A rate as an operator would write it (``50/s``, ``3000/min``, ``100/h``)."""
    if per_second is None:
        return ""
    for unit, seconds in (("s", 1), ("min", 60), ("h", 3600)):
        value = per_second * seconds
        if value >= 1 or unit == "h":
            return f"{value:.6g}/{unit}"
    return ""  # unreachable: the loop ends on "h"


def _number(text: str, name: str, *, limit: int) -> int:
    if not text:
        return 1
    if not (text.isdigit() and len(text) <= 9 and 1 <= int(text) <= limit):
        raise InvalidInput(f"{name} is a page number from 1 to {limit}")
    return int(text)


def _since(text: str) -> date:
    if not text:
        return datetime.now(UTC).date() - timedelta(days=USAGE_DAYS)
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise InvalidInput("since must be a date: YYYY-MM-DD") from None


def _key_row(key: KeyRecord, now: datetime, month: dict[str, int], last: dict[str, date]) -> dict[str, Any]:
    return {
        "id": key.id,
        "name": escape_controls(key.name),
        "role": key.role,
        "models": [escape_controls(p) for p in key.models],
        "created_at": key.created_at,
        "created_by": escape_controls(key.created_by or ""),
        "expires_at": key.expires_at,
        "revoked_at": key.revoked_at,
        "state": key.status(now),
        "rate": _rate(key.rate),
        "quota": key.quota,
        "this_month": month.get(key.id, 0),
        "last_used": last.get(key.id),
    }


async def page(console: Console, request: UIRequest) -> Page:
    return await _render(console, request)


async def _render(
    console: Console,
    request: UIRequest,
    *,
    status: int = 200,
    created: dict[str, str] | None = None,
    message: str = "",
    entered: dict[str, str] | None = None,
) -> Page:
    """The page: the keys (filtered by role and state, paged), the usage since a day, the create form.
    ``created`` is the key just made, with its token; ``message`` and ``entered`` a refused form."""
    store = _key_store(console)
    role, state = request.arg("role"), request.arg("state")
    if role and role not in ROLES:
        raise InvalidInput(f"role is one of {', '.join(ROLES)}")
    if state and state not in STATES:
        raise InvalidInput(f"state is one of {', '.join(STATES)}")
    usage_key = request.arg("key")
    if usage_key and not _KEY_ID.fullmatch(usage_key):
        raise InvalidInput("key is a key id: 12 lower-case letters or digits")
    since_text = request.arg("since").strip()[:20]
    since = _since(since_text)
    key_page = _number(request.arg("page"), "page", limit=1_000_000)
    usage_page = _number(request.arg("upage"), "upage", limit=1_000_000)

    def read() -> tuple[list[KeyRecord], list[UsageRow], dict[str, int]]:
        # three queries however many keys: the keys, the window's usage rows, the month's totals
        return (
            store.list_keys(),
            store.usage(key_id=usage_key or None, since=since),
            store.requests_this_month(),
        )

    keys, rows, month = await asyncio.to_thread(read)
    now = datetime.now(UTC)
    last: dict[str, date] = {}
    for row in rows:  # ordered by day: the last one seen is the latest
        last[row.key_id] = row.day
    chosen = [k for k in keys if (not role or k.role == role) and (not state or k.status(now) == state)]
    start = (key_page - 1) * KEY_PAGE
    shown = chosen[start : start + KEY_PAGE]
    names = {k.id: escape_controls(k.name) for k in keys}
    daily = list(reversed(rows))  # newest day first
    daily_start = (usage_page - 1) * USAGE_PAGE
    kept = {"role": role, "state": state, "since": since_text, "key": usage_key}

    def link(**changed: object) -> str:
        query = {k: v for k, v in {**kept, **changed}.items() if v}
        return "/ui/access?" + urlencode(query) if query else "/ui/access"

    revoked = request.arg("revoked")
    principal = request.principal
    return console.render(
        request,
        "access.html",
        status,
        keys=[_key_row(k, now, month, last) for k in shown],
        total_keys=len(keys),
        matching=len(chosen),
        key_page=key_page,
        newer_keys=link(page=key_page - 1) if key_page > 1 else None,
        more_keys=link(page=key_page + 1) if start + KEY_PAGE < len(chosen) else None,
        roles=ROLES,
        states=STATES,
        role=role,
        state=state,
        since=since,
        since_text=since_text,
        usage_key=usage_key,
        totals=usage_totals(rows),
        daily=daily[daily_start : daily_start + USAGE_PAGE],
        newer_usage=link(page=key_page, upage=usage_page - 1) if usage_page > 1 else None,
        older_usage=(
            link(page=key_page, upage=usage_page + 1) if daily_start + USAGE_PAGE < len(daily) else None
        ),
        names=names,
        own_key=principal.key_id if principal.subject is None else None,
        revoked=revoked if _KEY_ID.fullmatch(revoked) else "",
        created=created,
        message=message,
        entered=entered or {},
    )


def _patterns(text: str) -> list[str] | None:
    """Model patterns from the form: separated by commas or spaces; none given means every model."""
    patterns = [p for p in _SPLIT.split(text.strip()) if p]
    return patterns or None


async def create_key(console: Console, request: UIRequest) -> Page:
    """A new key, as ``POST /api/v1/keys``: the answer page shows its token, once."""
    store = _key_store(console)
    form = {name: request.form.get(name, "").strip() for name in _FIELDS}
    try:
        expires, rate, quota = form["expires"], form["rate"], form["quota"]
        created = await asyncio.to_thread(
            store.create,
            name=form["name"],
            role=form["role"],
            models=_patterns(form["models"]),
            expires_in=parse_duration(expires) if expires else None,
            rate=parse_rate(rate) if rate else None,
            quota=parse_quota(quota) if quota else None,
            actor=request.principal.actor,
        )
    except InvalidInput as exc:
        entered = {name: value[:_FIELD_MAX] for name, value in form.items()}
        return await _render(console, request, status=400, message=escape_controls(str(exc)), entered=entered)
    assert created is not None
    record, token = created
    await asyncio.to_thread(console.app.gate.reload)  # this worker at once; the others within a second
    shown = {"id": record.id, "name": escape_controls(record.name), "role": record.role, "token": token}
    return await _render(console, request, status=201, created=shown)


async def revoke_key(console: Console, request: UIRequest) -> Page:
    """Revoke a key, as ``DELETE /api/v1/keys/{id}`` (an unknown id: 404; revoking again changes
    nothing). Back to the page with a notice; after revoking one's own key, to the sign-in page."""
    # imported here: routes.py imports this module for its route table
    from modelport.ui.routes import Page

    key_id = request.params["key"]
    await asyncio.to_thread(_key_store(console).revoke, key_id, actor=request.principal.actor)
    await asyncio.to_thread(console.app.gate.reload)
    return Page(b"", 303, b"text/plain", ((b"location", f"/ui/access?revoked={key_id}".encode()),))
