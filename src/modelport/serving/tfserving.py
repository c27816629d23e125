"""TensorFlow Serving / KServe V1 REST protocol: a codec in front of the one data plane.

Routes (listed in ``RestApp.ROUTES``): ``POST /v1/models/NAME[/versions/V|/labels/L]:predict``,
``GET /v1/models/NAME[/versions/V|/labels/L]`` (TF Serving's ``model_version_status``) and
``GET /v1/models/NAME[/versions/V]/metadata``. A label is any modelport selector: ``labels/L`` is the
reference ``NAME@L`` (an alias, a version label or a number).

Request bodies, as TF Serving's REST API documents them, read against the tabular signature of the
version that answers (features by name):

- row form ``{"instances": [...]}``: objects keyed by feature name, or lists in signature order (or,
  for a one-feature model, bare values);
- columnar form ``{"inputs": {...}}`` (feature name → values, or one value for one row) or
  ``{"inputs": [[...]]}`` (rows in signature order);
- an optional ``"signature_name"``: modelport versions have one signature, ``serving_default``.

Answers follow TF Serving's convention for a model's output tensors — the same outputs V2 returns:
a regressor's row is its value; a classifier's row is ``{"label": …, "probabilities": […]}``
(probabilities in the order of the signature's classes, as MLflow's ``p_CLASS`` fields are). Row
form answers ``{"predictions": [...]}``; columnar form ``{"outputs": …}`` (the values, or
``{"label": [...], "probabilities": [[...]]}``). Values outside the training ranges add ``flags`` and
``flag_count`` beside it, as the MLflow and V2 answers do.

Every check that depends on the table's size runs on the parsed JSON before any column is built, in
time linear in the body: rows × features against ``Limits.max_elements`` first, then exactly the
signature's features (missing and unknown ones named), equal lengths, scalar cells.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from itertools import chain, islice
from operator import itemgetter
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from modelport.errors import InputMismatch, InvalidInput
from modelport.runtimes.base import Prediction
from modelport.serving.cells import CELLS, NAMED, bounded, first_non_scalar, listed
from modelport.serving.dataplane import OFFLOAD_ROWS
from modelport.serving.http import Request, Response, json_response
from modelport.serving.tensors import Tensor
from modelport.serving.v2 import Limits, parse_json
from modelport.signature import Batch, Signature

if TYPE_CHECKING:
    from modelport.serving.rest import RestApp

__all__ = [
    "SIGNATURE_NAME",
    "PredictPayload",
    "TFTable",
    "decode",
    "encode",
    "tf_model_metadata",
    "tf_model_status",
    "tf_predict",
]

SIGNATURE_NAME = "serving_default"  # TF Serving's default signature key: the only one a version has
ROWS, COLUMNS = "row", "columnar"


@dataclass(slots=True)
class TFTable:
    """A decoded, checked request: its form (row or columnar) and JSON values by feature name."""

    form: str
    rows: int
    columns: dict[str, list[Any]]


class PredictPayload:
    """A ``:predict`` body as the data plane's payload, decoded against the signature of the version
    that answers (once per signature: a release's arms may differ)."""

    __slots__ = ("_decoded", "body", "form", "limits")

    def __init__(self, body: bytes, limits: Limits) -> None:
        self.body, self.limits = body, limits
        self.form = ROWS  # set by the decoding: how the answer is shaped
        self._decoded: dict[int, tuple[Signature, Batch, int]] = {}

    @property
    def size(self) -> int:
        return len(self.body)

    def columns(self, signature: Signature) -> tuple[Batch, int, np.ndarray | None]:
        found = self._decoded.get(id(signature))
        if found is None or found[0] is not signature:
            table = decode(self.body, signature, self.limits)
            self.form = table.form
            found = (signature, signature.columns_batch(table.columns), table.rows)
            self._decoded[id(signature)] = found
        return found[1], found[2], None

    def tensors(self, signature: Signature) -> list[Tensor]:
        batch, rows, _ = self.columns(signature)
        return [
            Tensor(f.name, "FP64" if f.numeric else "BYTES", [rows], batch[f.name])
            for f in signature.features
        ]

    def field(self, name: str, signature: Signature) -> Any:
        batch, rows, _ = self.columns(signature)
        column = batch.get(name)
        return column[0] if column is not None and rows else None


# -- decoding ---------------------------------------------------------------------------------------


def decode(body: bytes, signature: Signature, limits: Limits) -> TFTable:
    """A ``:predict`` body checked against ``signature`` and ``limits`` before any column is built."""
    document = parse_json(body, limits)
    if not isinstance(document, dict):
        raise InvalidInput('the body must be a JSON object with "instances" or "inputs"')
    present = [key for key in ("instances", "inputs") if key in document]
    if len(present) != 1:
        raise InvalidInput('the body must have exactly one of "instances" (row form) or "inputs" (columnar)')
    unexpected = set(document) - {present[0], "signature_name"}
    if unexpected:
        raise InvalidInput(f"unexpected key(s) {', '.join(sorted(map(str, unexpected))[:NAMED])}")
    name = document.get("signature_name", SIGNATURE_NAME)
    if name != SIGNATURE_NAME:
        shown = repr(name[:40]) if isinstance(name, str) else "a non-string"
        raise InputMismatch(f"signature_name {shown} is not served: the only signature is {SIGNATURE_NAME!r}")
    key = present[0]
    value = document[key]
    if key == "inputs" and isinstance(value, dict):
        return _by_feature(value, signature, limits)
    form = ROWS if key == "instances" else COLUMNS
    if not isinstance(value, list) or not value:
        raise InvalidInput(f'"{key}" must be a non-empty list')
    kinds = set(map(type, value))
    if kinds == {dict} and key == "instances":
        return TFTable(form, len(value), _records(value, signature, limits))
    if kinds == {list}:
        return TFTable(form, len(value), _rows(value, signature, limits, f'"{key}"'))
    if kinds <= CELLS and len(signature.names) == 1:  # a one-feature model: one value a row
        bounded(len(value), 1, limits.max_elements, "feature")
        return TFTable(form, len(value), {signature.names[0]: value})
    expected = "objects keyed by feature name, or " if key == "instances" else ""
    raise InvalidInput(
        f'"{key}" must be a list of {expected}lists in signature order {signature.names}'[:300]
    )


def _records(value: list[dict[str, Any]], signature: Signature, limits: Limits) -> dict[str, list[Any]]:
    names = signature.names
    bounded(len(value), len(names), limits.max_elements, "feature")  # before any loop over the rows
    expected = set(names)
    for index, record in enumerate(value):  # bounded: rows × features ≤ max_elements, one row a step
        if len(record) != len(names) or record.keys() != expected:
            _match(list(record), signature, "" if len(value) == 1 else f"instance {index + 1}: ")
    _scalars(list(chain.from_iterable(r.values() for r in value)), names, '"instances"')
    return {name: list(map(itemgetter(name), value)) for name in names}


def _rows(rows: list[list[Any]], signature: Signature, limits: Limits, what: str) -> dict[str, list[Any]]:
    names = signature.names
    bounded(len(rows), len(names), limits.max_elements, "feature")
    if set(map(len, rows)) - {len(names)}:
        index, row = next((i, r) for i, r in enumerate(rows) if len(r) != len(names))
        raise InputMismatch(
            f"{what}: row {index + 1} has {len(row)} value(s) for the signature's {len(names)} "
            f"features {listed(names)}"
        )
    _scalars(list(chain.from_iterable(rows)), names, what)
    return dict(zip(names, map(list, zip(*rows, strict=True)), strict=True))


def _by_feature(value: dict[str, Any], signature: Signature, limits: Limits) -> TFTable:
    _match(list(value), signature)
    columns = {k: v if isinstance(v, list) else [v] for k, v in value.items()}
    lengths = set(map(len, columns.values()))
    if len(lengths) > 1:
        raise InvalidInput('every feature of "inputs" must have the same number of values')
    rows = lengths.pop() if lengths else 0
    if not rows:
        raise InvalidInput('"inputs" holds no values')
    bounded(rows, len(columns), limits.max_elements, "feature")
    for name, cells in columns.items():
        _scalars(cells, [name], '"inputs"')
    return TFTable(COLUMNS, rows, columns)


def _match(names: list[Any], signature: Signature, where: str = "") -> None:
    """Exactly the signature's features, in any order; what is missing or unknown is named."""
    if not set(map(type, names)) <= {str}:
        raise InputMismatch(f"{where}feature names must be strings")
    expected = signature.names
    if len(names) == len(expected) and set(names) == set(expected):
        return
    known, given = set(expected), set(names)
    parts = [f"{where}{len(names):,} feature(s) given for the signature's {len(expected)}"]
    missing = [n for n in expected if n not in given]
    unknown = list(islice((n for n in names if n not in known), NAMED + 1))
    if missing:
        parts.append(f"missing feature(s) {listed(missing)}")
    if unknown:
        parts.append(f"unknown feature(s) {listed(unknown)}")
    raise InputMismatch("; ".join(parts))


def _scalars(cells: list[Any], names: list[str], what: str) -> None:
    """Numbers, strings, booleans or null; a list or object in a cell is refused naming its feature.
    ``cells`` run row by row through ``names``."""
    found = first_non_scalar(cells)
    if found is None:
        return
    index, kind = found
    article = "a" if kind == "list" else "an"
    raise InputMismatch(
        f"{what}: feature {names[index % len(names)][:40]!r} holds {article} {kind}: values must be "
        "numbers, strings, booleans or null"
    )


# -- encoding ---------------------------------------------------------------------------------------


def encode(
    prediction: Prediction, signature: Signature, form: str, flags: dict[str, dict[str, int]] | None = None
) -> bytes:
    """``{"predictions": [...]}`` (row form) or ``{"outputs": ...}`` (columnar) as JSON."""
    answer: dict[str, Any]
    if prediction.values is not None:
        values = prediction.values.astype(np.float64, copy=False)
        answer = {"predictions" if form == ROWS else "outputs": values}
    else:
        assert prediction.labels is not None and prediction.probabilities is not None
        labels = _labels(prediction.labels, signature)
        probabilities = prediction.probabilities.astype(np.float64, copy=False).tolist()
        if form == ROWS:
            rows = [
                {"label": label, "probabilities": p} for label, p in zip(labels, probabilities, strict=True)
            ]
            answer = {"predictions": rows}
        else:
            answer = {"outputs": {"label": labels, "probabilities": probabilities}}
    if flags:
        answer["flags"] = flags
        answer["flag_count"] = sum(sum(kinds.values()) for kinds in flags.values())
    return orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY)


def _labels(labels: np.ndarray, signature: Signature) -> list[Any]:
    """Labels as V2 gives them: integers for integer classes, else text."""
    classes = signature.outputs.classes
    if all(isinstance(c, int) and not isinstance(c, bool) for c in classes):
        return [int(v) for v in labels.tolist()]
    return [str(v) for v in labels.tolist()]


# -- handlers (routes in RestApp.ROUTES) -------------------------------------------------------------


async def tf_predict(app: RestApp, request: Request) -> Response:
    """``:predict`` through the same data plane as V2, gRPC and MLflow: value checks with the model's
    policy, flags, batching, release arms, shadow copies, the prediction log and statistics."""
    ref = request.model_ref
    request.version = app.plane.resolve(ref)  # 404 before 400
    timeline = request.timeline
    if timeline is not None:  # decoded against the answering version's signature, in "validate"
        timeline.parsed = time.perf_counter_ns()
    payload = PredictPayload(request.body, app.limits)
    result = await app.plane.infer(
        ref,
        payload,
        request_id=request.request_id,
        key_id=request.principal.key_id,
        timeline=timeline,
        headers=request.headers,
    )
    request.version, request.rows = result.version, result.rows
    arguments = (result.prediction, result.signature, payload.form, result.flags)
    body = await asyncio.to_thread(encode, *arguments) if result.rows >= OFFLOAD_ROWS else encode(*arguments)
    if timeline is not None:
        timeline.serialised = time.perf_counter_ns()
    return Response(body, headers=((b"x-model-version", str(result.version).encode()),))


async def tf_model_status(app: RestApp, request: Request) -> Response:
    """TF Serving's ``GetModelStatus``: the named version (or every version the model's routes reach)
    with its state. Asking loads the named or default version, as the V2 readiness route does."""
    ref = request.model_ref
    number = app.plane.resolve(ref)  # unknown model or version: 404
    await app.plane.model_ready(ref)
    pool = app.plane.pool
    numbers = [number] if ref.selector is not None else sorted(set(pool.models().get(ref.name, {}).values()))
    loaded = set(pool.loaded())
    statuses = []
    for n in numbers:
        failure = pool.failures.get(f"{ref.name}@{n}")
        if (ref.name, n) in loaded:
            state, code, message = "AVAILABLE", "OK", ""
        elif failure is not None:
            state, code, message = "END", "UNAVAILABLE", failure.reason
        else:
            state, code, message = "START", "OK", ""  # loaded on its first request
        statuses.append(
            {"version": str(n), "state": state, "status": {"error_code": code, "error_message": message}}
        )
    return json_response({"model_version_status": statuses})


async def tf_model_metadata(app: RestApp, request: Request) -> Response:
    """TF Serving's ``GetModelMetadata``: the version's one signature as a ``signature_def``."""
    ref = request.model_ref
    app.plane.resolve(ref)
    loaded = await app.plane.loaded(ref)
    signature = loaded.signature

    def tensor(name: str, dtype: str, *dims: int) -> dict[str, Any]:
        return {
            "dtype": dtype,
            "tensor_shape": {"dim": [{"size": str(d), "name": ""} for d in dims], "unknown_rank": False},
            "name": name,
        }

    inputs = {
        f.name: tensor(f.name, "DT_DOUBLE" if f.numeric else "DT_STRING", -1) for f in signature.features
    }
    if signature.outputs.task == "regression":
        outputs = {"prediction": tensor("prediction", "DT_DOUBLE", -1)}
    else:
        integer = all(isinstance(c, int) and not isinstance(c, bool) for c in signature.outputs.classes)
        outputs = {
            "label": tensor("label", "DT_INT64" if integer else "DT_STRING", -1),
            "probabilities": tensor("probabilities", "DT_DOUBLE", -1, len(signature.outputs.classes)),
        }
    definition = {"inputs": inputs, "outputs": outputs, "method_name": "tensorflow/serving/predict"}
    return json_response(
        {
            "model_spec": {
                "name": ref.name,
                "signature_name": "",
                "version": str(loaded.version.number),
            },
            "metadata": {
                "signature_def": {"signature_def": {SIGNATURE_NAME: definition}},
                "classes": list(signature.outputs.classes),
            },
        }
    )
