"""The REST route of evidence bundles, wired into serving/rest.py's route table:

``GET /api/v1/models/{name}/evidence?at=T[&format=json]`` — the bundle (``application/zip``), or with
``format=json`` its summary. Permission ``admin``, as ``/api/v1/audit``: a bundle holds audit records,
approvers and validation reports — an auditor's view, not a consumer's. The manifest's SHA-256 is in
the ``X-Evidence-Manifest-SHA256`` header (and in the JSON), to be recorded elsewhere.

Drift and accuracy at T come from the worker's monitor child (monitoring/monitor.py: the serving
process never loads the prediction log's reader), over the windows ending at T — as
``modelport evidence`` computes them in its own process. With monitoring off (``MODELPORT_METRICS=false``)
``monitoring.json`` says so.
"""

from __future__ import annotations

import asyncio
import re
from typing import TYPE_CHECKING, Any

from modelport.errors import InvalidInput, ModelNotFound
from modelport.evidence.build import build_evidence, parse_at
from modelport.serving.http import Request, Response, json_response

if TYPE_CHECKING:
    from modelport.serving.rest import RestApp

__all__ = ["ROUTES"]

SERVER_NOTE = (
    "monitoring is off on this server (MODELPORT_METRICS=false): `modelport evidence NAME --at T` "
    "computes drift and accuracy from the prediction log"
)


def _monitoring(app: RestApp) -> Any:
    """Drift and accuracy of a model at T through the worker's monitor child; None when it is off."""
    monitor = app.worker.monitor
    if monitor is None:
        return None

    def compute(name: str, at: Any) -> dict[str, Any]:
        report = monitor.report(name, now=at.timestamp())
        accuracy = report.pop("accuracy")
        return {"drift": report, "accuracy": accuracy}

    return compute


def _one(request: Request, name: str) -> str | None:
    values = request.query.get(name)
    return values[-1] if values else None


async def get_evidence(app: RestApp, request: Request) -> Response:
    name = request.params["name"]
    if not request.principal.sees(name):  # outside the key's patterns: as if it did not exist
        raise ModelNotFound(f"no model named {name!r}")
    at_text, kind = _one(request, "at"), _one(request, "format") or "zip"
    if at_text is None:
        raise InvalidInput("give the time: ?at=2026-12-06T21:46:00Z (ISO 8601, UTC unless an offset) or now")
    if kind not in ("zip", "json"):
        raise InvalidInput("format is zip (the bundle) or json (its summary)")
    at = parse_at(at_text[:64])
    registry = app.worker.registry
    bundle = await asyncio.to_thread(
        build_evidence, registry, name, at, monitoring=_monitoring(app), monitoring_note=SERVER_NOTE
    )
    digest = bundle.manifest_sha256
    if kind == "json":
        return json_response({**bundle.summary, "manifest_sha256": digest})
    body = await asyncio.to_thread(bundle.to_zip)
    filename = f"{name}-evidence-{at:%Y%m%dT%H%M%SZ}.zip"
    return Response(
        body,
        content_type=b"application/zip",
        headers=(
            (b"content-disposition", f'attachment; filename="{filename}"'.encode()),
            (b"x-evidence-manifest-sha256", digest.encode()),
        ),
    )


ROUTES: tuple[tuple[str, re.Pattern[str], Any, bool, str | None], ...] = (
    ("GET", re.compile(r"/api/v1/models/(?P<name>[^/]+)/evidence"), get_evidence, False, "admin"),
)
