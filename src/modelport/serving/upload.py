"""Registration over HTTP: ``POST /api/v1/models/{name}/versions`` (publisher), a multipart form.

Parts: ``model`` (the file: skops, ONNX, XGBoost JSON/UBJ or LightGBM text — never a pickle),
``sample`` (Parquet or CSV), and short text fields: ``format`` (else the model part's file-name
extension), ``alias``, ``description``, ``label``, ``target``, ``require_onnx`` (``true``), and
``tags``, ``params``, ``metrics`` as JSON objects. ``curl -F model=@m.skops -F sample=@s.parquet``
works; ``modelport.Client.register`` and ``modelport register --server URL`` send it.

The body is hostile input and is never held in memory: python-multipart's streaming parser writes
each file part to a private folder under ``HOME/run/uploads`` (0700, removed afterwards whatever
happens) while counting — the declared ``Content-Length``, each part, the number of parts and headers
and each text field are bounded before more is read, and a body that stops between pieces is cut off
like any other (``body_timeout``). A part's file name is used for its extension only, never as a path.
Registration itself runs in a child process with CPU, memory and time limits (registry/upload.py):
the worker never parses the model.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import orjson

from modelport.errors import InvalidInput, UnsafeFormat
from modelport.registry.names import check_alias_name, check_model_name
from modelport.registry.upload import RegistrationLimits, register_in_child
from modelport.serving.http import HTTPError, Request, Response, json_response

if TYPE_CHECKING:
    from modelport.serving.rest import RestApp

__all__ = ["MAX_UPLOAD_BYTES", "register_version"]

MAX_UPLOAD_BYTES = 1 << 30  # the whole form; a model file over 1 GiB is registered from the CLI
UPLOAD_SECONDS = 600.0  # the whole upload (each piece must come within the server's body timeout)
LIMITS = RegistrationLimits()  # the registering child's CPU, memory and wall-clock limits
MAX_SAMPLE_BYTES = 256 << 20
_MAX_FIELD = 64 * 1024
_FILES = {"model", "sample"}
_TEXT = {"format", "alias", "description", "label", "target", "require_onnx", "tags", "params", "metrics"}
# The safe formats, by the file-name extensions intake.py knows (not imported: a serving process never
# loads the intake, the one module that can read a pickle).
_SUFFIX = {
    ".skops": "skops",
    ".onnx": "onnx",
    ".json": "xgboost-json",
    ".ubj": "xgboost-ubj",
    ".txt": "lightgbm-text",
    ".lgb": "lightgbm-text",
}
_FORMATS = frozenset(_SUFFIX.values())


class _Form:
    """The parts of one upload as python-multipart reports them: files to disk, text in memory."""

    def __init__(self, folder: Path, limit: int) -> None:
        self.folder, self.limit = folder, limit
        self.files: dict[str, Path] = {}
        self.text: dict[str, str] = {}
        self.filenames: dict[str, str] = {}
        self._header_field = b""
        self._headers: dict[str, bytes] = {}
        self._name = ""
        self._sink: BinaryIO | None = None
        self._buffer = bytearray()
        self._size = 0
        self.parts = 0

    # python-multipart's callbacks ------------------------------------------------------------
    def on_part_begin(self) -> None:
        self.parts += 1
        if self.parts > len(_FILES | _TEXT):
            raise InvalidInput("too many form parts")
        self._headers, self._header_field, self._name, self._size = {}, b"", "", 0
        self._buffer = bytearray()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        key = self._header_field.decode("latin-1").lower()
        self._headers[key] = self._headers.get(key, b"") + data[start:end]

    def on_header_end(self) -> None:
        self._header_field = b""

    def on_headers_finished(self) -> None:
        from python_multipart.multipart import parse_options_header

        disposition, options = parse_options_header(self._headers.get("content-disposition", b""))
        name = options.get(b"name", b"").decode("utf-8", "replace")
        if disposition != b"form-data" or name not in _FILES | _TEXT:
            raise InvalidInput(
                f"unknown form part {name[:40]!r}: parts are model, sample and " + ", ".join(sorted(_TEXT))
            )
        if name in self.files or name in self.text:
            raise InvalidInput(f"form part {name!r} was sent twice")
        self._name = name
        if name in _FILES:
            self.filenames[name] = os.path.basename(options.get(b"filename", b"").decode("utf-8", "replace"))[
                :200
            ]
            path = self.folder / name  # never the client's file name
            self._sink = path.open("xb")
            self.files[name] = path

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        self._size += end - start
        if self._sink is not None:
            cap = MAX_SAMPLE_BYTES if self._name == "sample" else self.limit
            if self._size > cap:
                raise HTTPError(413, f"the {self._name} part is over {cap:,} bytes")
            self._sink.write(data[start:end])
        else:
            if self._size > _MAX_FIELD:
                raise InvalidInput(f"form field {self._name!r} is over {_MAX_FIELD:,} bytes")
            self._buffer += data[start:end]

    def on_part_end(self) -> None:
        if self._sink is not None:
            self._sink.close()
            self._sink = None
        elif self._name:
            try:
                self.text[self._name] = self._buffer.decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidInput(f"form field {self._name!r} is not UTF-8") from None

    def close(self) -> None:
        if self._sink is not None:
            self._sink.close()


async def _receive_form(app: RestApp, request: Request, folder: Path) -> _Form:
    from python_multipart.multipart import MultipartParser, parse_options_header

    media, options = parse_options_header(request.headers.get("content-type", ""))
    boundary = options.get(b"boundary")
    if media != b"multipart/form-data" or not boundary or len(boundary) > 200:
        raise HTTPError(415, "send the model as multipart/form-data (parts: model, sample, …)")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_UPLOAD_BYTES:
        raise HTTPError(413, f"the upload is over {MAX_UPLOAD_BYTES:,} bytes")
    form = _Form(folder, MAX_UPLOAD_BYTES)
    callbacks: Any = {
        name: getattr(form, name)
        for name in (
            "on_part_begin",
            "on_part_data",
            "on_part_end",
            "on_header_field",
            "on_header_value",
            "on_header_end",
            "on_headers_finished",
        )
    }
    # No max_size: past it python-multipart truncates silently. The body is counted here instead.
    parser = MultipartParser(boundary, callbacks)
    received = 0
    receive = request.receive
    assert receive is not None, "the route streams its body"
    loop = asyncio.get_running_loop()
    finish = loop.time() + UPLOAD_SECONDS
    try:
        while True:
            async with asyncio.timeout(min(loop.time() + app.body_timeout, finish)):
                message = await receive()
            if message["type"] == "http.disconnect":
                raise HTTPError(400, "client disconnected")
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > MAX_UPLOAD_BYTES:
                raise HTTPError(413, f"the upload is over {MAX_UPLOAD_BYTES:,} bytes")
            if chunk:
                parser.write(chunk)
            if not message.get("more_body", False):
                break
        parser.finalize()
    except TimeoutError:
        raise HTTPError(408, "the upload did not arrive in time") from None
    except (InvalidInput, HTTPError):
        raise
    except Exception:  # the parser's own refusal of a malformed body
        raise InvalidInput("the multipart form could not be read") from None
    finally:
        form.close()
    return form


def _json_object(form: _Form, field: str) -> dict[str, Any] | None:
    text = form.text.get(field)
    if text is None:
        return None
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise InvalidInput(f"{field} must be a JSON object") from None
    if not isinstance(value, dict):
        raise InvalidInput(f"{field} must be a JSON object")
    return value


def _format(form: _Form) -> str:
    declared = form.text.get("format", "").strip().lower()
    if declared:
        if declared == "pickle" or declared not in _FORMATS:
            raise UnsafeFormat(
                "pickles are never registered over HTTP (they run code): send skops, ONNX, XGBoost JSON/UBJ "
                "or LightGBM text"
                if declared == "pickle"
                else f"unknown format {declared[:40]!r}: one of " + ", ".join(sorted(_FORMATS))
            )
        return declared
    suffix = Path(form.filenames.get("model", "")).suffix.lower()
    if suffix in (".pkl", ".pickle", ".joblib"):
        raise UnsafeFormat("pickles are never registered over HTTP (they run code): send a skops file")
    if suffix not in _SUFFIX:
        raise InvalidInput(
            "say the model's format: a format field, or a file name ending .skops, .onnx, .json, .ubj or .txt"
        )
    return _SUFFIX[suffix]


async def register_version(app: RestApp, request: Request) -> Response:
    name = check_model_name(request.params["name"])
    settings = app.worker.registry.settings
    uploads = settings.home / "run" / "uploads"
    uploads.mkdir(parents=True, exist_ok=True, mode=0o700)
    folder = uploads / secrets.token_hex(8)
    folder.mkdir(mode=0o700)
    try:
        form = await _receive_form(app, request, folder)
        missing = _FILES - set(form.files)
        if missing:
            raise InvalidInput(f"the form needs a {' and a '.join(sorted(missing))} part")
        fmt = _format(form)
        sample = form.files["sample"]
        with sample.open("rb") as head:
            magic = head.read(4)
        sample_path = sample.rename(folder / ("sample.parquet" if magic == b"PAR1" else "sample.csv"))
        model_path = form.files["model"]
        alias = form.text.get("alias") or None
        if alias is not None:
            check_alias_name(alias)
        job = {
            "home": str(settings.home.resolve()),
            "database_url": settings.resolved_database_url,
            "folder": str(folder),
            "name": name,
            "model": str(model_path),
            "format": fmt,
            "sample": str(sample_path),
            "alias": alias,
            "description": form.text.get("description", "")[:10_000],
            "label": form.text.get("label") or None,
            "target": form.text.get("target") or None,
            "require_onnx": form.text.get("require_onnx", "").lower() in ("1", "true", "yes"),
            "tags": _json_object(form, "tags"),
            "params": _json_object(form, "params"),
            "metrics": _json_object(form, "metrics"),
            "actor": request.principal.actor,
        }
        version = await asyncio.to_thread(register_in_child, job, LIMITS)
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(folder)
    return json_response(
        version, 201, headers=((b"location", f"/api/v1/models/{name}/versions/{version['number']}".encode()),)
    )


# rest.py passes this route its ASGI receive and reads nothing itself
register_version.streams_body = True  # type: ignore[attr-defined]
