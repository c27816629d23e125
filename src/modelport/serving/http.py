"""The request and response types the REST adapters share (no framework: see rest.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from modelport.errors import AuditFailure, IdentityProviderUnavailable, StorageFailure, StoreNotReady
from modelport.monitoring.tracing import Timeline
from modelport.registry.audit import NOT_WRITTEN
from modelport.registry.names import ModelRef
from modelport.security.keys import DEV_PRINCIPAL, Principal

__all__ = ["HTTPError", "Request", "Response", "json_response", "public_message"]


def public_message(error: Exception) -> str:
    """An error's message as a client may read it. Database and artifact-store failures name the store
    (host, user, file path, bucket) for operators; clients only learn that the registry is unavailable,
    or that a change was not applied because its audit record could not be written (the operator log
    has the cause)."""
    if isinstance(error, AuditFailure):
        return NOT_WRITTEN
    if isinstance(error, IdentityProviderUnavailable):
        return str(error)  # names no host: says only that access tokens cannot be checked now
    if isinstance(error, StoreNotReady):
        return "the registry or its artifact store is unavailable: try again later"
    if isinstance(error, StorageFailure):
        return "the registry database refused the operation"
    return str(error)


class HTTPError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(slots=True)
class Request:
    method: str
    path: str
    params: dict[str, str]
    headers: dict[str, str]
    body: bytes
    principal: Principal = DEV_PRINCIPAL
    query: dict[str, list[str]] = field(default_factory=dict)
    rows: int = 0  # rows scored, for usage records
    version: int | None = None  # the version that answered (or was resolved), for metrics
    request_id: str = ""
    timeline: Timeline | None = None  # phase times of a traced inference request (tracing on)
    ref: ModelRef | None = None  # the model the route names, parsed once at the edge
    receive: Any = None  # the ASGI receive of a route that streams its own body (serving/upload.py)

    @property
    def model_ref(self) -> ModelRef:
        """The route's model reference (for handlers of routes that always name one)."""
        assert self.ref is not None, "the route names no model"
        return self.ref


@dataclass(slots=True)
class Response:
    body: bytes
    status: int = 200
    content_type: bytes = b"application/json"
    headers: tuple[tuple[bytes, bytes], ...] = ()
    file: Path | None = None  # sent in pieces instead of ``body`` (a batch job's output)


def json_response(data: Any, status: int = 200, headers: tuple[tuple[bytes, bytes], ...] = ()) -> Response:
    return Response(orjson.dumps(data, option=orjson.OPT_SERIALIZE_NUMPY), status, headers=headers)
