"""The management API, ``/api/v1``: keys, usage, audit, aliases and policies over HTTP.

JSON only: a body that is not ``application/json`` is refused with 415, so no browser form or
``text/plain`` "simple request" from another site can change anything. Every handler is a thin
translation to the core (:class:`~modelport.security.store.KeyStore`, the registry); database work runs
off the event loop. Routes and permissions are listed in :data:`ROUTES`; ``docs/security.md`` has the
table.
"""

from __future__ import annotations

import asyncio
import re
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

import orjson

from modelport.errors import Conflict, Forbidden, InvalidInput, NotFound
from modelport.registry.names import check_alias_name, check_version_number, parse_ref
from modelport.releases.manager import ReleaseManager
from modelport.security.keys import parse_duration, parse_quota, parse_rate
from modelport.security.store import KeyStore
from modelport.serving.http import HTTPError, Request, Response, json_response

if TYPE_CHECKING:
    from modelport.serving.rest import RestApp

__all__ = ["ROUTES"]

_KEY = r"(?P<key>[a-z0-9]{12})"
_NAME = r"(?P<name>[^/]+)"
_ALIAS = r"(?P<alias>[^/]+)"


def _document(request: Request, allowed: set[str]) -> dict[str, Any]:
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "application/json":
        raise HTTPError(415, "the management API accepts application/json bodies only")
    try:
        document = orjson.loads(request.body) if request.body else {}
    except orjson.JSONDecodeError:
        raise InvalidInput("the body is not valid JSON") from None
    if not isinstance(document, dict):
        raise InvalidInput("the body must be a JSON object")
    unexpected = sorted(set(document) - allowed)
    if unexpected:
        raise InvalidInput(f"unexpected field(s): {', '.join(unexpected[:10])}")
    return document


def _text(document: dict[str, Any], field: str, *, required: bool = False) -> str | None:
    value = document.get(field)
    if value is None:
        if required:
            raise InvalidInput(f'"{field}" is required')
        return None
    if not isinstance(value, str):
        raise InvalidInput(f'"{field}" must be a string')
    return value


def _one(request: Request, name: str) -> str | None:
    values = request.query.get(name)
    return values[-1] if values else None


def _keys(app: RestApp) -> KeyStore:
    if app.gate.keys is None:
        raise HTTPError(404, "this server runs without keys (--insecure-dev)")
    return app.gate.keys


async def list_keys(app: RestApp, request: Request) -> Response:
    keys = await asyncio.to_thread(_keys(app).list_keys)
    return json_response({"keys": [key.to_dict() for key in keys]})


async def create_key(app: RestApp, request: Request) -> Response:
    document = _document(request, {"name", "role", "models", "expires", "rate", "quota"})
    models = document.get("models")  # absent: every model; otherwise checked by the key store
    expires, rate, quota = _text(document, "expires"), _text(document, "rate"), _text(document, "quota")
    created = await asyncio.to_thread(
        _keys(app).create,
        name=_text(document, "name", required=True) or "",
        role=_text(document, "role", required=True) or "",
        models=models,
        expires_in=parse_duration(expires) if expires else None,
        rate=parse_rate(rate) if rate else None,
        quota=parse_quota(quota) if quota else None,
        actor=request.principal.actor,
    )
    assert created is not None
    record, token = created
    await asyncio.to_thread(app.gate.reload)  # this worker at once; the others within a second
    return json_response({"key": record.to_dict(), "token": token}, 201)


async def revoke_key(app: RestApp, request: Request) -> Response:
    record = await asyncio.to_thread(_keys(app).revoke, request.params["key"], actor=request.principal.actor)
    await asyncio.to_thread(app.gate.reload)
    return json_response({"key": record.to_dict()})


async def update_key(app: RestApp, request: Request) -> Response:
    document = _document(request, {"models", "expires", "rate", "quota"})
    models = document.get("models")
    if "models" in document and models is None:
        raise InvalidInput('"models" cannot be null: give the patterns the key may use')
    clear = tuple(
        field for field in ("expires", "rate", "quota") if field in document and document[field] is None
    )
    expires, rate, quota = _text(document, "expires"), _text(document, "rate"), _text(document, "quota")
    record = await asyncio.to_thread(
        _keys(app).update,
        request.params["key"],
        actor=request.principal.actor,
        models=models,
        rate=parse_rate(rate) if rate else None,
        quota=parse_quota(quota) if quota else None,
        expires_in=parse_duration(expires) if expires else None,
        clear=clear,
    )
    await asyncio.to_thread(app.gate.reload)
    return json_response({"key": record.to_dict()})


async def rotate_key(app: RestApp, request: Request) -> Response:
    document = _document(request, {"grace"})
    grace = _text(document, "grace")
    record, token = await asyncio.to_thread(
        _keys(app).rotate,
        request.params["key"],
        grace=parse_duration(grace) if grace else timedelta(hours=24),
        actor=request.principal.actor,
    )
    await asyncio.to_thread(app.gate.reload)
    return json_response({"key": record.to_dict(), "token": token})


async def get_usage(app: RestApp, request: Request) -> Response:
    """Admins see every key's usage; other keys see their own."""
    key = _one(request, "key")
    if not request.principal.may("admin"):
        if key not in (None, request.principal.key_id):
            raise NotFound(f"no key with id {key!r}")
        key = request.principal.key_id
    since_text = _one(request, "since")
    try:
        since = date.fromisoformat(since_text) if since_text else None
    except ValueError:
        raise InvalidInput("since must be a date: YYYY-MM-DD") from None
    rows = await asyncio.to_thread(_keys(app).usage, key_id=key, model=_one(request, "model"), since=since)
    # a key whose patterns were narrowed keeps its old rows, but not the names outside its scope now
    sees = request.principal.sees
    return json_response({"usage": [row.to_dict() for row in rows if sees(row.model)]})


async def get_audit(app: RestApp, request: Request) -> Response:
    store = app.worker.registry.store
    limit_text = _one(request, "limit") or "1000"
    if not re.fullmatch(r"\d{1,6}", limit_text):
        raise InvalidInput("limit must be a number up to 999999")
    records = await asyncio.to_thread(
        store.audit_records,
        action=_one(request, "action"),
        target=_one(request, "target"),
        limit=int(limit_text),
    )
    return json_response({"records": [record.to_dict() for record in records]})


async def verify_audit(app: RestApp, request: Request) -> Response:
    result = await asyncio.to_thread(app.worker.registry.store.verify_audit)
    return json_response(
        {"ok": result.ok, "records": result.count, "head": result.head, "problem": result.problem or None},
        200 if result.ok else 409,
    )


async def list_models(app: RestApp, request: Request) -> Response:
    models = await asyncio.to_thread(app.worker.registry.models)
    return json_response({"models": [m.to_dict() for m in models if request.principal.sees(m.name)]})


async def list_versions(app: RestApp, request: Request) -> Response:
    """A page of a model's versions, newest first: ``?limit=`` (1–1000, 100) and ``?before=N`` for the
    next page (the response's ``next`` when there is one). Two queries however many versions exist."""
    limit_text, before_text = _one(request, "limit") or "100", _one(request, "before")
    if not re.fullmatch(r"\d{1,4}", limit_text) or not 1 <= int(limit_text) <= 1000:
        raise InvalidInput("limit must be a number from 1 to 1000")
    if before_text is not None and not re.fullmatch(r"\d{1,9}", before_text):
        raise InvalidInput("before must be a version number")
    name = request.params["name"]
    found = await asyncio.to_thread(
        app.worker.registry.version_summaries,
        name,
        limit=int(limit_text),
        before=int(before_text) if before_text is not None else None,
    )
    versions = [
        {
            "number": v.number,
            "status": v.status,
            "label": v.label,
            "creator": v.creator,
            "created_at": v.created_at.isoformat(),
            "aliases": list(v.aliases),
        }
        for v in found
    ]
    more = len(found) == int(limit_text) and found[-1].number > 1
    return json_response({"model": name, "versions": versions, "next": found[-1].number if more else None})


async def set_alias(app: RestApp, request: Request) -> Response:
    document = _document(request, {"version", "override_reason", "allow_incompatible"})
    version = document.get("version")
    override = _text(document, "override_reason")
    incompatible = _allow_incompatible(document)
    if override is not None or incompatible:
        request.principal.require("admin")  # overriding the promotion gate is an admin's call
    if not isinstance(version, int) or isinstance(version, bool):
        raise InvalidInput('"version" must be a version number')
    alias = request.params["alias"]
    check_alias_name(alias)
    result = await asyncio.to_thread(
        _manager(app).set_alias,
        request.params["name"],
        alias,
        check_version_number(version),
        actor=request.principal.actor,
        override_reason=override,
        allow_incompatible=incompatible,
    )
    return _changed(result, {"model": request.params["name"], "alias": alias})


def _allow_incompatible(document: dict[str, Any]) -> bool:
    """``"allow_incompatible": true``: move traffic to a version whose signature cannot take it
    (docs/releases.md), an admin's call like the gate's override."""
    value = document.get("allow_incompatible", False)
    if not isinstance(value, bool):
        raise InvalidInput('"allow_incompatible" must be true or false')
    return value


async def remove_alias(app: RestApp, request: Request) -> Response:
    alias = request.params["alias"]
    check_alias_name(alias)
    result = await asyncio.to_thread(
        _manager(app).remove_alias, request.params["name"], alias, actor=request.principal.actor
    )
    return _changed(result, {})


def _manager(app: RestApp) -> ReleaseManager:
    return ReleaseManager(app.worker.registry)


def _changed(result: dict[str, Any], applied: dict[str, Any]) -> Response:
    """200 with the outcome of an applied change; 202 with the pending change when the alias needs a
    second key's approval."""
    if result["status"] == "pending":
        return json_response(result, status=202)
    return json_response({**applied, **result})


def _version_field(document: dict[str, Any], field: str) -> int | None:
    value = document.get(field)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidInput(f'"{field}" must be a version number')
    return check_version_number(value)


async def start_release(app: RestApp, request: Request) -> Response:
    fields = {
        "canary",
        "weight",
        "sticky_by",
        "shadow",
        "auto_rollback",
        "override_reason",
        "allow_incompatible",
    }
    document = _document(request, fields)
    override = _text(document, "override_reason")
    incompatible = _allow_incompatible(document)
    if override is not None or incompatible:
        request.principal.require("admin")
    rule = document.get("auto_rollback")
    if rule is not None and not isinstance(rule, dict):
        raise InvalidInput('"auto_rollback" must be an object like {"error_rate": 0.05, "window": 60}')
    alias = check_alias_name(request.params["alias"])
    result = await asyncio.to_thread(
        lambda: _manager(app).start(
            request.params["name"],
            alias,
            actor=request.principal.actor,
            canary=_version_field(document, "canary"),
            weight=document.get("weight"),
            sticky_by=_text(document, "sticky_by"),
            shadow=_version_field(document, "shadow"),
            auto_rollback=rule,
            override_reason=override,
            allow_incompatible=incompatible,
        )
    )
    return _changed(result, {"model": request.params["name"], "alias": alias})


async def release_status(app: RestApp, request: Request) -> Response:
    alias = check_alias_name(request.params["alias"])
    monitor = app.worker.monitor

    def accuracy(name: str) -> dict[str, Any]:
        # through the monitor's child process (no pandas in a serving worker), and only when labels
        # have come at all; no monitor, no accuracy
        if monitor is None or not app.worker.registry.store.monitoring.has_feedback(name):
            return {}
        return monitor.report(name, accuracy_only=True)

    return json_response(
        await asyncio.to_thread(_manager(app).status, request.params["name"], alias, accuracy)
    )


async def stop_release(app: RestApp, request: Request) -> Response:
    alias = check_alias_name(request.params["alias"])
    result = await asyncio.to_thread(
        _manager(app).stop, request.params["name"], alias, actor=request.principal.actor
    )
    return _changed(result, {"model": request.params["name"], "alias": alias})


async def promote_release(app: RestApp, request: Request) -> Response:
    document = _document(request, {"override_reason", "allow_incompatible"})
    override = _text(document, "override_reason")
    incompatible = _allow_incompatible(document)
    if override is not None or incompatible:
        request.principal.require("admin")
    alias = check_alias_name(request.params["alias"])
    result = await asyncio.to_thread(
        lambda: _manager(app).promote(
            request.params["name"],
            alias,
            actor=request.principal.actor,
            override_reason=override,
            allow_incompatible=incompatible,
        )
    )
    return _changed(result, {"model": request.params["name"], "alias": alias})


async def rollback_alias(app: RestApp, request: Request) -> Response:
    document = _document(request, {"reason"})
    reason = _text(document, "reason")
    alias = check_alias_name(request.params["alias"])
    result = await asyncio.to_thread(
        lambda: _manager(app).rollback(
            request.params["name"], alias, actor=request.principal.actor, reason=reason
        )
    )
    return _changed(result, {"model": request.params["name"], "alias": alias})


async def alias_history(app: RestApp, request: Request) -> Response:
    alias = check_alias_name(request.params["alias"])
    store = app.worker.registry.store.releases
    entries = await asyncio.to_thread(store.history, request.params["name"], alias)
    return json_response(
        {"model": request.params["name"], "alias": alias, "history": [e.to_dict() for e in entries]}
    )


_CHANGE = r"(?P<change>[0-9]{1,9})"


async def list_changes(app: RestApp, request: Request) -> Response:
    status = _one(request, "status")
    if status is not None and status not in (
        "pending",
        "approved",
        "rejected",
        "applied",
        "failed",
        "expired",
    ):
        raise InvalidInput("status is one of pending, approved, rejected, applied, failed, expired")
    changes = await asyncio.to_thread(app.worker.registry.store.releases.changes, status=status)
    return json_response({"changes": [c.to_dict() for c in changes if request.principal.sees(c.model)]})


async def _visible_change(app: RestApp, request: Request) -> int:
    change_id = int(request.params["change"])
    change = await asyncio.to_thread(app.worker.registry.store.releases.change, change_id)
    if not request.principal.sees(change.model):
        raise NotFound(f"no change {change_id}")  # like a missing one: scopes reveal nothing
    return change_id


async def approve_change(app: RestApp, request: Request) -> Response:
    _document(request, set())
    change_id = await _visible_change(app, request)
    result = await asyncio.to_thread(_manager(app).approve, change_id, actor=request.principal.actor)
    return json_response(result)


async def reject_change(app: RestApp, request: Request) -> Response:
    document = _document(request, {"reason"})
    change_id = await _visible_change(app, request)
    result = await asyncio.to_thread(
        _manager(app).reject, change_id, actor=request.principal.actor, reason=_text(document, "reason")
    )
    return json_response(result)


async def set_policy(app: RestApp, request: Request) -> Response:
    document = _document(request, {"on_violation"})
    policy = _text(document, "on_violation", required=True) or ""
    registry = app.worker.registry
    await asyncio.to_thread(
        registry.set_policy, request.params["name"], policy, actor=request.principal.actor
    )
    return json_response({"model": request.params["name"], "on_violation": policy})


_REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=@-]{1,128}")
MAX_LABELS = 10_000


def _labels(document: dict[str, Any]) -> list[tuple[str, int, str]]:
    """Checked ``(request id, row, label)`` triples from a feedback body."""
    labels = document.get("labels")
    if not isinstance(labels, list) or not labels:
        raise InvalidInput('"labels" must be a non-empty list of {"request_id", "row", "label"}')
    if len(labels) > MAX_LABELS:
        raise InvalidInput(f"at most {MAX_LABELS:,} labels per request; send the rest in another")
    checked = []
    for position, item in enumerate(labels):
        where = f"labels[{position}]"
        if not isinstance(item, dict) or set(item) - {"request_id", "row", "label"}:
            raise InvalidInput(f'{where} must be an object with "request_id", "row" (optional) and "label"')
        request_id, row, label = item.get("request_id"), item.get("row", 0), item.get("label")
        if not isinstance(request_id, str) or not _REQUEST_ID.fullmatch(request_id):
            raise InvalidInput(f"{where}: the request id is the X-Request-ID a response carried")
        if not isinstance(row, int) or isinstance(row, bool) or not 0 <= row < 1_000_000:
            raise InvalidInput(f"{where}: the row is the 0-based row within that request")
        if isinstance(label, bool) or not isinstance(label, str | int | float) or label != label:
            raise InvalidInput(f"{where}: the label must be a string or a number")
        text = str(label)
        if not 0 < len(text) <= 200:
            raise InvalidInput(f"{where}: the label must be 1 to 200 characters")
        checked.append((request_id, row, text))
    return checked


async def post_feedback(app: RestApp, request: Request) -> Response:
    document = _document(request, {"model", "labels"})
    model = _text(document, "model", required=True) or ""
    labels = _labels(document)
    if not request.principal.sees(model):
        raise NotFound(f"no model named {model[:100]!r}")
    stored = await asyncio.to_thread(
        app.worker.registry.store.monitoring.add_feedback, model, labels, actor=request.principal.actor
    )
    return json_response({"model": model, "stored": stored})


def _drift_query(request: Request) -> tuple[int | None, int]:
    version, windows = _one(request, "version"), _one(request, "windows") or "1"
    if version is not None and not version.isdigit():
        raise InvalidInput("version must be a version number")
    if not windows.isdigit() or not 1 <= int(windows) <= 1000:
        raise InvalidInput("windows must be a number from 1 to 1000")
    return (None if version is None else check_version_number(int(version))), int(windows)


async def get_drift(app: RestApp, request: Request) -> Response:
    version, windows = _drift_query(request)
    monitor = app.worker.monitor
    if monitor is None:
        raise HTTPError(404, "monitoring is off on this server (MODELPORT_METRICS=false)")
    name = request.params["name"]
    return json_response(await asyncio.to_thread(monitor.report, name, version=version, windows=windows))


# -- batch jobs (docs/batch.md) -------------------------------------------------------------------

_JOB = r"(?P<job>job-[0-9a-f]{12})"
_JOB_FIELDS = {"model", "input", "output", "keep", "drop", "on_violation", "chunk_rows"}


def _names(document: dict[str, Any], field: str) -> list[str]:
    value = document.get(field, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value) or len(value) > 1_000:
        raise InvalidInput(f'"{field}" must be a list of column names')
    return value


async def submit_job(app: RestApp, request: Request) -> Response:
    from modelport.batch.job import ScoreOptions
    from modelport.batch.runner import submit

    document = _document(request, _JOB_FIELDS)
    ref = _text(document, "model", required=True)
    source = _text(document, "input", required=True)
    output = _text(document, "output", required=True)
    assert ref is not None and source is not None and output is not None
    parsed = parse_ref(ref)
    if not request.principal.sees(parsed.name):
        raise NotFound(f"no model named {parsed.name!r}")  # as for a model that does not exist
    on_violation = _text(document, "on_violation")
    if on_violation not in (None, "reject", "flag", "skip"):
        raise InvalidInput('"on_violation" is one of reject, flag, skip')
    chunk_rows = document.get("chunk_rows", 65_536)
    if (
        not isinstance(chunk_rows, int)
        or isinstance(chunk_rows, bool)
        or not 1_000 <= chunk_rows <= 10_000_000
    ):
        raise InvalidInput('"chunk_rows" must be a whole number from 1,000 to 10,000,000')
    options = ScoreOptions(
        keep=_names(document, "keep"),
        drop=_names(document, "drop"),
        on_violation=on_violation,  # type: ignore[arg-type]
        chunk_rows=chunk_rows,
    )
    settings = app.worker.jobs.settings if app.worker.jobs is not None else None
    if settings is None:
        raise Forbidden(
            "batch jobs over the API are off on this server: the operator sets MODELPORT_BATCH_ROOTS"
        )
    job = await asyncio.to_thread(
        submit, app.worker.registry, settings, ref, source, output, options, actor=request.principal.actor
    )
    return json_response(job.to_dict(), 202, headers=((b"location", f"/api/v1/jobs/{job.id}".encode()),))


async def _own_job(app: RestApp, request: Request) -> Any:
    """The job the route names, if the caller submitted it (admins see every job)."""
    job = await asyncio.to_thread(app.worker.registry.store.jobs.get, request.params["job"])
    if not request.principal.may("admin") and job.actor != request.principal.actor:
        raise NotFound(f"no batch job {job.id!r}")  # another key's job is not disclosed
    return job


async def list_jobs(app: RestApp, request: Request) -> Response:
    found = await asyncio.to_thread(app.worker.registry.store.jobs.recent, None, 200)
    admin = request.principal.may("admin")
    mine = [j.to_dict() for j in found if admin or j.actor == request.principal.actor]
    return json_response({"jobs": mine})


async def get_job(app: RestApp, request: Request) -> Response:
    return json_response((await _own_job(app, request)).to_dict())


async def cancel_job(app: RestApp, request: Request) -> Response:
    job = await _own_job(app, request)
    cancelled = await asyncio.to_thread(
        app.worker.registry.store.jobs.cancel, job.id, request.principal.actor
    )
    return json_response(cancelled.to_dict(), 202)


async def job_output(app: RestApp, request: Request) -> Response:
    from pathlib import Path

    from modelport.batch.runner import inside_roots

    job = await _own_job(app, request)
    if job.status != "done":
        raise Conflict(f"batch job {job.id} is {job.status}: its output is there once it is done")
    settings = app.worker.jobs.settings if app.worker.jobs is not None else None
    roots = list(settings.batch_roots) if settings is not None else []
    path = inside_roots(job.output, roots, what="output")  # still inside, symlinks resolved, now
    if not Path(path).is_file():
        raise NotFound(f"the output of {job.id} is no longer there")
    kind = b"text/csv" if path.suffix.lower() == ".csv" else b"application/vnd.apache.parquet"
    disposition = f'attachment; filename="{path.name}"'.encode()
    return Response(b"", content_type=kind, headers=((b"content-disposition", disposition),), file=path)


ROUTES: tuple[tuple[str, re.Pattern[str], Any, bool, str], ...] = (
    ("GET", re.compile(r"/api/v1/keys"), list_keys, False, "admin"),
    ("POST", re.compile(r"/api/v1/keys"), create_key, False, "admin"),
    ("DELETE", re.compile(rf"/api/v1/keys/{_KEY}"), revoke_key, False, "admin"),
    ("PATCH", re.compile(rf"/api/v1/keys/{_KEY}"), update_key, False, "admin"),
    ("POST", re.compile(rf"/api/v1/keys/{_KEY}/rotate"), rotate_key, False, "admin"),
    ("GET", re.compile(r"/api/v1/usage"), get_usage, False, "read"),
    ("GET", re.compile(r"/api/v1/audit"), get_audit, False, "admin"),
    ("GET", re.compile(r"/api/v1/audit/verify"), verify_audit, False, "admin"),
    ("GET", re.compile(r"/api/v1/models"), list_models, False, "read"),
    ("GET", re.compile(rf"/api/v1/models/{_NAME}/versions"), list_versions, False, "read"),
    ("PUT", re.compile(rf"/api/v1/models/{_NAME}/aliases/{_ALIAS}"), set_alias, False, "publish"),
    ("DELETE", re.compile(rf"/api/v1/models/{_NAME}/aliases/{_ALIAS}"), remove_alias, False, "publish"),
    ("PUT", re.compile(rf"/api/v1/models/{_NAME}/policy"), set_policy, False, "publish"),
    ("POST", re.compile(r"/api/v1/feedback"), post_feedback, False, "infer"),
    ("GET", re.compile(rf"/api/v1/models/{_NAME}/drift"), get_drift, False, "read"),
    ("PUT", re.compile(rf"/api/v1/models/{_NAME}/aliases/{_ALIAS}/release"), start_release, False, "publish"),
    ("GET", re.compile(rf"/api/v1/models/{_NAME}/aliases/{_ALIAS}/release"), release_status, False, "read"),
    (
        "DELETE",
        re.compile(rf"/api/v1/models/{_NAME}/aliases/{_ALIAS}/release"),
        stop_release,
        False,
        "publish",
    ),
    (
        "POST",
        re.compile(rf"/api/v1/models/{_NAME}/aliases/{_ALIAS}/release/promote"),
        promote_release,
        False,
        "publish",
    ),
    (
        "POST",
        re.compile(rf"/api/v1/models/{_NAME}/aliases/{_ALIAS}/rollback"),
        rollback_alias,
        False,
        "publish",
    ),
    ("GET", re.compile(rf"/api/v1/models/{_NAME}/aliases/{_ALIAS}/history"), alias_history, False, "read"),
    ("GET", re.compile(r"/api/v1/approvals"), list_changes, False, "publish"),
    ("POST", re.compile(rf"/api/v1/approvals/{_CHANGE}/approve"), approve_change, False, "publish"),
    ("POST", re.compile(rf"/api/v1/approvals/{_CHANGE}/reject"), reject_change, False, "publish"),
    ("POST", re.compile(r"/api/v1/jobs"), submit_job, False, "publish"),
    ("GET", re.compile(r"/api/v1/jobs"), list_jobs, False, "publish"),
    ("GET", re.compile(rf"/api/v1/jobs/{_JOB}"), get_job, False, "publish"),
    ("POST", re.compile(rf"/api/v1/jobs/{_JOB}/cancel"), cancel_job, False, "publish"),
    ("GET", re.compile(rf"/api/v1/jobs/{_JOB}/output"), job_output, False, "publish"),
)
