"""The console's audit page, ``/ui/audit`` (admins only, like ``/api/v1/audit``).

It reads what the API reads: :meth:`RegistryStore.audit_records` for the trail (filtered and paged in
the database, newest first, on the sequence number rather than an offset) and
:meth:`RegistryStore.verify_audit` for the chain — the call behind ``/api/v1/audit/verify`` and
``modelport audit verify``. "What served at time T" is :func:`~modelport.evidence.timeline.served_at`,
a pure fold over the audited alias moves of one ``model@alias`` (shared with evidence bundles): the
audit log is the record that cannot be edited unnoticed, so the answer comes from it rather than from
the mutable alias tables.

Every text a record carries (targets are request paths when an attempt was denied, actors come from
identity providers) is shown with its control characters as visible escapes, and autoescaped: markup
in a record is text on the page.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from modelport.errors import InvalidInput
from modelport.evidence.timeline import AliasState, served_at
from modelport.registry.audit import AuditRecord
from modelport.tables import escape_controls

if TYPE_CHECKING:
    from modelport.ui.routes import Console, Page, UIRequest

__all__ = ["MAX_PAGE", "PAGE_SIZE", "AliasState", "page", "served_at"]

PAGE_SIZE = 50
MAX_PAGE = 200  # a page is one indexed query; a bigger one would only be slower to read
_LIMITS = {"target": 300, "actor": 200, "action": 40}  # the audit_log column widths


def _when(text: str, name: str) -> datetime | None:
    """A time from a form: ISO 8601 (a ``datetime-local`` field sends ``2026-12-06T21:46``), UTC unless
    it names an offset."""
    text = text.strip()
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInput(f"{name} must be a time like 2026-12-06T21:46 (UTC)") from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _shown(value: Any) -> str:
    """A record's value as one line of text: JSON for structures, control characters escaped."""
    if value is None:
        return ""
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, ensure_ascii=False)
    return escape_controls(text)


def _row(record: AuditRecord) -> dict[str, Any]:
    return {
        "seq": record.seq,
        "at": record.at,
        "actor": escape_controls(record.actor),
        "action": escape_controls(record.action),
        "target": escape_controls(record.target),
        "before": _shown(record.before),
        "after": _shown(record.after),
    }


async def page(console: Console, request: UIRequest) -> Page:
    """The trail, newest first: filters by target (a prefix, as on the API), actor, action and time;
    pages of at most :data:`MAX_PAGE` records; the chain's verification; what an alias served at T."""
    store = console.app.worker.registry.store
    filters: dict[str, Any] = {}
    form: dict[str, str] = {}
    for name, limit in _LIMITS.items():
        form[name] = request.arg(name).strip()[:limit]
        if form[name]:
            filters[name] = form[name]
    for name in ("since", "until"):
        form[name] = request.arg(name).strip()[:40]
        filters[name] = _when(form[name], name)
    size_text, before_text = request.arg("size") or str(PAGE_SIZE), request.arg("before")
    if not size_text.isdigit() or not 1 <= int(size_text) <= MAX_PAGE:
        raise InvalidInput(f"size is a number from 1 to {MAX_PAGE}")
    if before_text and not (before_text.isdigit() and len(before_text) <= 18):
        raise InvalidInput("before is a record's sequence number")
    size = int(size_text)
    filters["before"] = int(before_text) if before_text else None
    # one more than a page: whether an older page exists, without counting the whole trail
    found = await asyncio.to_thread(store.audit_records, limit=size + 1, **filters)
    newest_first = list(reversed(found))
    shown, more = newest_first[:size], len(newest_first) > size
    older = None
    if more:
        kept = {k: v for k, v in form.items() if v}
        older = "/ui/audit?" + urlencode({**kept, "size": size, "before": shown[-1].seq})
    verification = await asyncio.to_thread(store.verify_audit)

    alias_ref = request.arg("alias").strip()[:300]
    at_text = request.arg("at").strip()[:40]
    served: dict[str, Any] | None = None
    if alias_ref:
        if "@" not in alias_ref:
            raise InvalidInput("name the alias as model@alias, for example credit@production")
        at = _when(at_text, "at") or datetime.now(UTC)
        moves = await asyncio.to_thread(store.audit_records, target=alias_ref, until=at)
        state = served_at(moves, alias_ref, at)
        served = {
            "alias": escape_controls(alias_ref),
            "at": at,
            "version": state.version,
            "record": None if state.record is None else _row(state.record),
        }
    return console.render(
        request,
        "audit.html",
        rows=[_row(r) for r in shown],
        form=form,
        size=size,
        max_size=MAX_PAGE,
        paged=bool(before_text),
        older=older,
        verification=verification,
        served=served,
        alias_ref=alias_ref,
        at_text=at_text,
    )
