"""Every operation of the client, written once as a generator of HTTP calls.

An operation yields :class:`Call` objects and is sent back each answer (or has the mapped error
thrown into it); what it returns is the method's result. :class:`~modelport.client.Client` drives the
generators with blocking I/O, :class:`~modelport.client.AsyncClient` with ``await`` — so request
building, encoding, decoding and error handling exist once, and the two clients cannot drift apart.
"""

from __future__ import annotations

import io
import secrets
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any, TypeAlias, TypeVar
from urllib.parse import quote

import httpx
import numpy as np
import orjson
import pandas as pd

from modelport.client._wire import (
    HEADER_LENGTH,
    decode_outputs,
    encode_inputs,
    model_path,
    prediction_frame,
    split_ref,
    to_frame,
)
from modelport.errors import InputMismatch, ModelNotFound

__all__ = ["Call", "Model", "Operations", "Rows", "Step"]

T = TypeVar("T")
Rows: TypeAlias = pd.DataFrame | Mapping[Any, Any] | np.ndarray
JSON: TypeAlias = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Call:
    """One HTTP request of an operation. ``sink``: stream a successful answer's body into this file."""

    method: str
    path: str
    params: Mapping[str, str] | None = None
    json: Any = None
    content: bytes | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    sink: Path | None = None


Step: TypeAlias = Generator[Call, httpx.Response, T]


@dataclass(frozen=True, slots=True)
class Model:
    """A registered model as ``GET /api/v1/models`` lists it."""

    name: str
    description: str
    created_at: datetime
    latest_version: int
    aliases: dict[str, int]
    on_violation: str

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Model:
        return cls(
            name=data["name"],
            description=data.get("description", ""),
            created_at=datetime.fromisoformat(data["created_at"]),
            latest_version=int(data["latest_version"]),
            aliases={str(k): int(v) for k, v in data.get("aliases", {}).items()},
            on_violation=data.get("on_violation", "flag"),
        )


def _q(part: str | int) -> str:
    return quote(str(part), safe="")


def _alias_path(name: str, alias: str) -> str:
    return f"/api/v1/models/{_q(name)}/aliases/{_q(alias)}"


def _options(**fields: Any) -> JSON:
    """A JSON body of the fields given (None: left out, so the server's default applies)."""
    return {k: v for k, v in fields.items() if v is not None and v is not False}


class Operations:
    """The operations, with the state they keep: model metadata by reference and by version (a model's
    inputs and classes are read once, not on every prediction)."""

    def __init__(self) -> None:
        self.metadata_cache: dict[tuple[str, str | None], JSON] = {}

    # -- inference ---------------------------------------------------------------------------------

    def metadata(self, name: str, selector: str | None, *, fresh: bool = False) -> Step[JSON]:
        key = (name, selector)
        if fresh or key not in self.metadata_cache:
            response = yield Call("GET", model_path(name, selector))
            document: JSON = response.json()
            self.metadata_cache[key] = document
            self.metadata_cache[(name, str(document["parameters"]["version"]))] = document
        return self.metadata_cache[key]

    def predict(self, ref: str, rows: Rows, request_id: str | None) -> Step[pd.DataFrame]:
        name, selector = split_ref(ref)
        metadata = yield from self.metadata(name, selector)
        try:
            response = yield self._infer(name, selector, rows, metadata, request_id)
        except InputMismatch:
            # The reference may have moved to a version that reads other inputs since the metadata was
            # read: read it again, and if it did change, send once more (a 400 changed nothing).
            fresh = yield from self.metadata(name, selector, fresh=True)
            if fresh["inputs"] == metadata["inputs"]:
                raise
            metadata = fresh
            response = yield self._infer(name, selector, rows, metadata, request_id)
        document, outputs = decode_outputs(response.content, response.headers.get(HEADER_LENGTH))
        version = str(document.get("model_version", metadata["parameters"]["version"]))
        answering = metadata
        if version != str(metadata["parameters"]["version"]):  # another arm of a release answered
            answering = yield from self.metadata(name, version)
        frame = prediction_frame(outputs, list(answering["parameters"].get("classes", [])))
        frame.attrs.update(
            model=name,
            model_version=int(version),
            request_id=response.headers.get("x-request-id"),
            flags=(document.get("parameters") or {}).get("flags", {}),
        )
        return frame

    @staticmethod
    def _infer(name: str, selector: str | None, rows: Rows, metadata: JSON, request_id: str | None) -> Call:
        frame = to_frame(rows, list(metadata["parameters"].get("features", [])))
        body, length = encode_inputs(frame, metadata, request_id)
        headers = {"Content-Type": "application/octet-stream", HEADER_LENGTH: str(length)}
        if request_id is not None:
            headers["X-Request-ID"] = request_id
        return Call("POST", model_path(name, selector) + "/infer", content=body, headers=headers)

    # -- models and aliases ------------------------------------------------------------------------

    def models(self) -> Step[list[Model]]:
        response = yield Call("GET", "/api/v1/models")
        return [Model.from_json(m) for m in response.json()["models"]]

    def model(self, name: str) -> Step[Model]:
        for model in (yield from self.models()):
            if model.name == name:
                return model
        raise ModelNotFound(f"no model named {name[:100]!r}")

    def versions(self, name: str, limit: int | None) -> Step[list[JSON]]:
        """Every version of ``name``, newest first, read a page at a time (at most ``limit``)."""
        found: list[JSON] = []
        before: int | None = None
        while limit is None or len(found) < limit:
            params = {"limit": str(min(1000, limit - len(found)) if limit else 1000)}
            if before is not None:
                params["before"] = str(before)
            page = _json((yield Call("GET", f"/api/v1/models/{_q(name)}/versions", params=params)))
            found += page["versions"]
            before = page.get("next")
            if before is None:
                break
        return found

    def set_alias(
        self, name: str, alias: str, version: int, override_reason: str | None, allow_incompatible: bool
    ) -> Step[JSON]:
        body = _options(
            version=version, override_reason=override_reason, allow_incompatible=allow_incompatible
        )
        return _json((yield Call("PUT", _alias_path(name, alias), json=body)))

    def register(
        self, name: str, model: bytes, filename: str, sample: bytes, fields: Mapping[str, str]
    ) -> Step[JSON]:
        """``POST /api/v1/models/{name}/versions``: the model file, its sample, short text fields."""
        body, content_type = multipart_form(
            {"model": (filename, model), "sample": ("sample.parquet", sample)}, fields
        )
        call = Call(
            "POST",
            f"/api/v1/models/{_q(name)}/versions",
            content=body,
            headers={"content-type": content_type},
        )
        return _json((yield call))

    def remove_alias(self, name: str, alias: str) -> Step[JSON]:
        return _json((yield Call("DELETE", _alias_path(name, alias))))

    def alias_history(self, name: str, alias: str) -> Step[list[JSON]]:
        return _items((yield Call("GET", _alias_path(name, alias) + "/history")), "history")

    def set_policy(self, name: str, on_violation: str) -> Step[JSON]:
        body = {"on_violation": on_violation}
        return _json((yield Call("PUT", f"/api/v1/models/{_q(name)}/policy", json=body)))

    # -- releases and approvals ----------------------------------------------------------------------

    def start_release(self, name: str, alias: str, options: JSON) -> Step[JSON]:
        return _json((yield Call("PUT", _alias_path(name, alias) + "/release", json=options)))

    def release_status(self, name: str, alias: str) -> Step[JSON]:
        return _json((yield Call("GET", _alias_path(name, alias) + "/release")))

    def promote(self, name: str, alias: str, options: JSON) -> Step[JSON]:
        return _json((yield Call("POST", _alias_path(name, alias) + "/release/promote", json=options)))

    def rollback(self, name: str, alias: str, reason: str | None) -> Step[JSON]:
        body = _options(reason=reason)
        return _json((yield Call("POST", _alias_path(name, alias) + "/rollback", json=body)))

    def stop_release(self, name: str, alias: str) -> Step[JSON]:
        return _json((yield Call("DELETE", _alias_path(name, alias) + "/release")))

    def approvals(self, status: str | None) -> Step[list[JSON]]:
        params = {"status": status} if status is not None else None
        return _items((yield Call("GET", "/api/v1/approvals", params=params)), "changes")

    def approve(self, change: int) -> Step[JSON]:
        return _json((yield Call("POST", f"/api/v1/approvals/{int(change)}/approve", json={})))

    def reject(self, change: int, reason: str | None) -> Step[JSON]:
        body = _options(reason=reason)
        return _json((yield Call("POST", f"/api/v1/approvals/{int(change)}/reject", json=body)))

    # -- batch jobs ----------------------------------------------------------------------------------

    def submit_job(self, body: JSON) -> Step[JSON]:
        return _json((yield Call("POST", "/api/v1/jobs", json=body)))

    def job(self, job_id: str) -> Step[JSON]:
        return _json((yield Call("GET", f"/api/v1/jobs/{_q(job_id)}")))

    def jobs(self) -> Step[list[JSON]]:
        return _items((yield Call("GET", "/api/v1/jobs")), "jobs")

    def cancel_job(self, job_id: str) -> Step[JSON]:
        return _json((yield Call("POST", f"/api/v1/jobs/{_q(job_id)}/cancel", json={})))

    def job_output(self, job_id: str, to: Path) -> Step[Path]:
        yield Call("GET", f"/api/v1/jobs/{_q(job_id)}/output", sink=to)
        return to

    # -- usage and monitoring ------------------------------------------------------------------------

    def usage(self, key: str | None, model: str | None, since: date | None) -> Step[list[JSON]]:
        params = _options(key=key, model=model, since=since.isoformat() if since else None)
        return _items((yield Call("GET", "/api/v1/usage", params=params)), "usage")

    def feedback(self, model: str, labels: Sequence[Mapping[str, Any]] | pd.DataFrame) -> Step[int]:
        if isinstance(labels, pd.DataFrame):
            items: list[dict[Any, Any]] = labels.to_dict(orient="records")
        else:
            items = [dict(item) for item in labels]
        body = {"model": model, "labels": [_plain(item) for item in items]}
        return int((yield Call("POST", "/api/v1/feedback", json=body)).json()["stored"])

    def drift(self, name: str, version: int | None, windows: int) -> Step[JSON]:
        params = _options(version=str(version) if version is not None else None, windows=str(windows))
        return _json((yield Call("GET", f"/api/v1/models/{_q(name)}/drift", params=params)))


def multipart_form(files: Mapping[str, tuple[str, bytes]], fields: Mapping[str, str]) -> tuple[bytes, str]:
    """A ``multipart/form-data`` body and its content type (RFC 7578), built in memory."""
    boundary = "modelport-" + secrets.token_hex(16)
    parts: list[bytes] = []
    for field_name, value in fields.items():
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="{field_name}"\r\n\r\n'
        parts.append(head.encode() + value.encode() + b"\r\n")
    for field_name, (filename, data) in files.items():
        safe = filename.replace('"', "").replace("\r", "").replace("\n", "")
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{field_name}"; filename="{safe}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        )
        parts.append(head.encode() + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def register_fields(
    *,
    format: str | None,
    alias: str | None,
    description: str,
    label: str | None,
    target: str | None,
    require_onnx: bool,
    tags: Mapping[str, str] | None,
    params: Mapping[str, Any] | None,
    metrics: Mapping[str, float] | None,
) -> dict[str, str]:
    """The text fields of a registration form: only those given."""
    fields = {"format": format, "alias": alias, "label": label, "target": target}
    chosen = {k: v for k, v in fields.items() if v}
    if description:
        chosen["description"] = description
    if require_onnx:
        chosen["require_onnx"] = "true"
    for field_name, mapping in (("tags", tags), ("params", params), ("metrics", metrics)):
        if mapping:
            chosen[field_name] = orjson.dumps(dict(mapping)).decode()
    return chosen


def sample_bytes(sample: pd.DataFrame | str | Path) -> bytes:
    """A sample as Parquet bytes (a DataFrame), or a Parquet/CSV file's bytes as they are."""
    if isinstance(sample, pd.DataFrame):
        out = io.BytesIO()
        sample.to_parquet(out, index=False)
        return out.getvalue()
    return Path(sample).read_bytes()


def _json(response: httpx.Response) -> JSON:
    document: JSON = response.json()
    return document


def _items(response: httpx.Response, field: str) -> list[JSON]:
    items: list[JSON] = response.json()[field]
    return items


def _plain(item: Mapping[Any, Any]) -> dict[str, Any]:
    """A feedback label with numpy scalars (from a DataFrame) made JSON numbers."""
    return {str(k): v.item() if isinstance(v, np.generic) else v for k, v in item.items()}


def release_options(
    canary: int | None,
    weight: float | None,
    sticky_by: str | None,
    shadow: int | None,
    auto_rollback: Mapping[str, Any] | None,
    override_reason: str | None,
    allow_incompatible: bool,
) -> JSON:
    return _options(
        canary=canary,
        weight=weight,
        sticky_by=sticky_by,
        shadow=shadow,
        auto_rollback=dict(auto_rollback) if auto_rollback is not None else None,
        override_reason=override_reason,
        allow_incompatible=allow_incompatible,
    )


def job_body(
    model: str,
    input: str,
    output: str,
    keep: Sequence[str] | None,
    drop: Sequence[str] | None,
    on_violation: str | None,
    chunk_rows: int | None,
) -> JSON:
    return _options(
        model=model,
        input=input,
        output=output,
        keep=list(keep) if keep is not None else None,
        drop=list(drop) if drop is not None else None,
        on_violation=on_violation,
        chunk_rows=chunk_rows,
    )
