"""MLflow scoring protocol codec: ``/invocations`` bodies in, ``{"predictions": ...}`` out.

Accepted JSON keys: ``dataframe_split`` (columns + data), ``dataframe_records`` (list of records),
``instances`` and ``inputs`` (records, a column dict, or a row matrix in signature order), with an
optional ``params`` object; or a CSV body (``text/csv``). Predictions are one record per row — the
same records ``modelport predict`` prints — so MLflow clients and the CLI agree.

The table must have exactly the signature's columns (any order): a missing, unknown or repeated
column is refused naming it, never filled with NaN or dropped. Every check that depends on the
table's size runs on the parsed JSON or the CSV header line, in time linear in the body, *before*
pandas sees the data: columns against the signature, rows × columns against ``Limits.max_elements``,
every row as wide as the header, every record with the same keys, cells scalar (no lists or objects).
A 100,000-column body used to keep a worker busy for minutes in pandas and the signature check.

JSON tables never meet pandas: the checked values go to the signature's columns by column name
(``Signature.columns_batch``), and predictions are encoded as records directly — a one-row request
costs a tenth of what a DataFrame round trip did. CSV bodies are parsed by pandas (imported on the
first CSV request, so a server that only speaks JSON never loads it: about 80 MB of memory).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from itertools import chain, islice
from operator import itemgetter
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from modelport.errors import InputMismatch, InvalidInput, UnsupportedMediaType
from modelport.runtimes.base import Prediction
from modelport.serving.cells import NAMED, bounded, first_non_scalar, listed
from modelport.serving.tensors import Tensor
from modelport.serving.v2 import Limits, parse_json
from modelport.signature import Batch, Signature

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "FramePayload",
    "Table",
    "UnsupportedMediaType",
    "decode_frame",
    "decode_table",
    "encode_predictions",
]

_KEYS = ("dataframe_split", "dataframe_records", "instances", "inputs")
_SPLIT_KEYS = {"columns", "data", "index"}  # "index" is what DataFrame.to_dict("split") adds; ignored
_CSV_PIECE_BYTES = 1 << 20  # CSV bodies from this size on are parsed in pieces


class FramePayload:
    """An MLflow scoring body as the data plane's payload: decoded (and checked) against the signature
    of the version that answers — once per signature, since a release's arms may differ."""

    __slots__ = ("_decoded", "body", "content_type", "limits")

    def __init__(self, body: bytes, content_type: str, limits: Limits) -> None:
        self.body, self.content_type, self.limits = body, content_type, limits
        self._decoded: dict[int, tuple[Signature, Batch, int]] = {}

    @property
    def size(self) -> int:
        return len(self.body)

    def columns(self, signature: Signature) -> tuple[Batch, int, np.ndarray | None]:
        found = self._decoded.get(id(signature))
        if found is None or found[0] is not signature:
            table = decode_table(self.body, self.content_type, signature, self.limits)
            if table.frame is not None:  # CSV, read by pandas' parser
                found = (signature, signature.batch(table.frame), len(table.frame))
            else:  # JSON: plain lists, converted column by column at C speed where possible
                assert table.columns is not None
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


@dataclass(slots=True)
class Table:
    """A decoded, checked MLflow table: a pandas frame (CSV) or JSON values by column name."""

    rows: int
    columns: dict[str, list[Any]] | None = None
    frame: pd.DataFrame | None = None


def decode_frame(body: bytes, content_type: str, signature: Signature, limits: Limits) -> pd.DataFrame:
    """The table as a pandas frame (for callers that want one; serving uses :func:`decode_table`)."""
    table = decode_table(body, content_type, signature, limits)
    if table.frame is not None:
        return table.frame
    import pandas as pd

    assert table.columns is not None
    return pd.DataFrame({k: np.asarray(v, dtype=object) for k, v in table.columns.items()})


def decode_table(body: bytes, content_type: str, signature: Signature, limits: Limits) -> Table:
    """An MLflow scoring body, checked against ``signature`` and ``limits`` before any table is built:
    exactly the signature's columns, bounded size, scalar cells."""
    media = content_type.split(";")[0].strip().lower()
    if media == "text/csv":
        frame = _csv(body, signature, limits)
        return Table(len(frame), frame=frame)
    if media not in ("application/json", ""):
        raise UnsupportedMediaType(
            f"content type {media!r} is not supported: use application/json or text/csv"
        )
    document = parse_json(body, limits)
    if not isinstance(document, dict):
        raise InvalidInput(f"the body must be a JSON object with one of: {', '.join(_KEYS)}")
    present = [k for k in _KEYS if k in document]
    if len(present) != 1:
        raise InvalidInput(f"the body must have exactly one of: {', '.join(_KEYS)}")
    unexpected = set(document) - {present[0], "params"}
    if unexpected:
        raise InvalidInput(f"unexpected key(s) {', '.join(sorted(unexpected)[:NAMED])}")
    key, value = present[0], document[present[0]]
    if key == "dataframe_split":
        return _split(value, signature, limits)
    if key == "dataframe_records":
        if not isinstance(value, list):
            raise InvalidInput('"dataframe_records" must be a list of objects')
        return _records(value, signature, limits, key)
    return _instances(value, signature, limits, key)


# -- the shapes a table may take ---------------------------------------------------------------------


def _csv(body: bytes, signature: Signature, limits: Limits) -> pd.DataFrame:
    width = len(signature.names)
    # The header is read alone: a line no longer than the quoted, escaped feature names could be.
    longest = 4 * sum(len(n.encode()) + 3 for n in signature.names) + 64
    end = body.find(b"\n", 0, longest + 1)
    if end < 0 and len(body) > longest:
        raise InputMismatch(f"the CSV header line is longer than the signature's {width} column names")
    head, rest = (body[: end + 1], body[end + 1 :]) if end >= 0 else (body, b"")
    try:
        header = next(csv.reader([head.decode("utf-8-sig")]), [])
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InvalidInput(f"body is not readable CSV: {str(exc)[:120]}") from None
    _match(header, signature)
    # A quoted cell may hold a newline, so this counts at least the rows pandas will find.
    rows = rest.count(b"\n") + (0 if rest.endswith(b"\n") or not rest else 1)
    bounded(rows, width, limits.max_elements, "column")
    # pandas fills short rows with NaN (as `modelport predict --input rows.csv` does) and refuses a
    # longer row — except the first, which it silently turns into an index, shifting every column.
    first = next((row for row in csv.reader(io.StringIO(_first_line(rest))) if row), None)
    if first is not None and len(first) > width:
        raise InputMismatch(f"CSV row 1 has {len(first)} fields for {width} columns")
    try:
        import pandas as pd  # after the checks: a refused body skips its 0.3 s import

        if len(body) < _CSV_PIECE_BYTES:
            return pd.read_csv(io.BytesIO(body))
        # pandas' parser holds the interpreter while it parses: a large body is read 20,000 rows at a
        # time, so the event loop (probes, other requests) runs between pieces
        return pd.concat(pd.read_csv(io.BytesIO(body), chunksize=20_000), ignore_index=True)
    except Exception as exc:
        raise InvalidInput(f"body is not readable CSV: {str(exc).splitlines()[0][:120]}") from None


def _first_line(data: bytes) -> str:
    """The first non-blank line of ``data`` (decoded; undecodable bytes left to pandas to refuse)."""
    for line in islice(io.BytesIO(data), 1_000):
        if line.strip():
            return line.decode("utf-8", "replace")
    return ""


def _by_column(columns: list[str], rows: list[list[Any]]) -> Table:
    """Checked rows (each as long as ``columns``) as lists by column: one C-speed transposition."""
    if not rows:
        return Table(0, {name: [] for name in columns})
    return Table(len(rows), dict(zip(columns, map(list, zip(*rows, strict=True)), strict=True)))


def _split(value: Any, signature: Signature, limits: Limits) -> Table:
    if not isinstance(value, dict) or "data" not in value:
        raise InvalidInput('"dataframe_split" needs "columns" and "data"')
    unexpected = set(value) - _SPLIT_KEYS
    if unexpected:
        shown = ", ".join(sorted(unexpected)[:NAMED])
        raise InvalidInput(f'unexpected key(s) in "dataframe_split": {shown}')
    columns = value.get("columns")
    if columns is None:
        columns = signature.names
    elif not isinstance(columns, list):
        raise InvalidInput('"dataframe_split" "columns" must be a list of names')
    _match(columns, signature)
    rows = value["data"]
    _rows(rows, columns, limits, '"dataframe_split" "data"')
    return _by_column(columns, rows)


def _records(value: list[Any], signature: Signature, limits: Limits, key: str) -> Table:
    names = signature.names
    bounded(len(value), len(names), limits.max_elements, "column")
    if value and set(map(type, value)) != {dict}:
        raise InvalidInput(f'"{key}" must be a list of objects')
    expected = set(names)
    for index, record in enumerate(value):  # bounded: rows × columns ≤ max_elements, one row a step
        if len(record) != len(names) or record.keys() != expected:
            where = "" if len(value) == 1 else f"record {index + 1}: "
            _match(list(record), signature, where)
    _scalars(list(chain.from_iterable(r.values() for r in value)), names, f'"{key}"')
    return Table(len(value), {name: list(map(itemgetter(name), value)) for name in names})


def _instances(value: Any, signature: Signature, limits: Limits, key: str) -> Table:
    if isinstance(value, dict):  # column name -> values (or one value)
        _match(list(value), signature)
        columns = {k: v if isinstance(v, list) else [v] for k, v in value.items()}
        lengths = set(map(len, columns.values()))
        if len(lengths) > 1:
            raise InvalidInput(f'every column of "{key}" must have the same number of values')
        rows = lengths.pop() if lengths else 0
        bounded(rows, len(columns), limits.max_elements, "column")
        for name, cells in columns.items():
            _scalars(cells, [name], f'"{key}"')
        return Table(rows, columns)
    kinds = set(map(type, value)) if isinstance(value, list) else set()
    if value and kinds == {dict}:
        return _records(value, signature, limits, key)
    if value and kinds == {list}:  # rows in signature order
        _rows(value, signature.names, limits, f'"{key}"')
        return _by_column(signature.names, value)
    raise InvalidInput(f'"{key}" must be records, a column mapping, or rows in signature order')


# -- the checks, all before pandas ------------------------------------------------------------------


def _match(columns: list[Any], signature: Signature, where: str = "") -> None:
    """Exactly the signature's columns, in any order. Linear in ``len(columns)``: a set, no counting."""
    if not set(map(type, columns)) <= {str}:
        raise InputMismatch(f"{where}column names must be strings")
    names = signature.names
    if len(columns) == len(names) and set(columns) == set(names):  # equal sizes: no repeats either
        return
    known, given = set(names), set(columns)
    missing = [n for n in names if n not in given]
    unknown = list(islice((c for c in columns if c not in known), NAMED + 1))
    parts = [f"{where}{len(columns):,} column(s) given for the signature's {len(names)} feature(s)"]
    if missing:
        parts.append(f"missing column(s) {listed(missing)}")
    if unknown:
        parts.append(f"unknown column(s) {listed(unknown)}")
    if len(given) != len(columns):
        seen: set[str] = set()
        repeated: list[str] = []
        for column in columns:
            if column in seen and len(repeated) <= NAMED:
                repeated.append(column)
            seen.add(column)
        parts.append(f"repeated column(s) {listed(repeated)}")
    raise InputMismatch("; ".join(parts))


def _rows(rows: Any, columns: list[str], limits: Limits, what: str) -> None:
    """A list of rows, each a list as long as ``columns``, of scalar cells — three C-speed scans."""
    if not isinstance(rows, list):
        raise InvalidInput(f"{what} must be a list of rows")
    bounded(len(rows), len(columns), limits.max_elements, "column")
    if rows and set(map(type, rows)) != {list}:
        raise InvalidInput(f"{what} must be a list of rows (lists)")
    widths = set(map(len, rows))
    if widths - {len(columns)}:
        index, row = next((i, r) for i, r in enumerate(rows) if len(r) != len(columns))
        raise InputMismatch(f"{what}: row {index + 1} has {len(row)} value(s) for {len(columns)} columns")
    _scalars(list(chain.from_iterable(rows)), columns, what)


def _scalars(cells: list[Any], columns: list[str], what: str) -> None:
    """Numbers, strings, booleans or null; a list or object in a cell is refused naming its column.
    ``cells`` run row by row through ``columns``."""
    found = first_non_scalar(cells)
    if found is None:
        return
    index, kind = found
    raise InputMismatch(
        f"{what}: column {columns[index % len(columns)][:40]!r} holds a {kind}: cells must be numbers, "
        "strings, booleans or null"
    )


def encode_predictions(
    prediction: Prediction,
    signature: Signature,
    flags: dict[str, dict[str, int]] | None = None,
    rows: int = 5_000,
) -> bytes:
    """MLflow's ``{"predictions": [...]}`` as JSON, one record per row. Values outside the training
    ranges (the ``flag`` policy) add ``flags`` (``{feature: {kind: rows}}``) and ``flag_count`` beside
    it, as the V2 response's parameters do; MLflow clients read ``predictions`` and ignore the rest.

    Records are built and serialised ``rows`` at a time: a 300,000-row answer as one list of dicts
    would keep 300,000 objects alive, and the cyclic collector's full passes over them (plus one
    orjson call over all of them) hold the interpreter for ~0.2 s, which the event loop would wait for."""
    parts = [b'{"predictions":[']
    for start in range(0, len(prediction), rows):
        if start:
            parts.append(b",")
        parts.append(_records_json(prediction, signature, start, start + rows))
    if flags:
        count = sum(sum(kinds.values()) for kinds in flags.values())
        parts.append(b"]," + orjson.dumps({"flags": flags, "flag_count": count})[1:])
    else:
        parts.append(b"]}")
    return b"".join(parts)  # one copy of the answer


def _records_json(prediction: Prediction, signature: Signature, start: int, stop: int) -> bytes:
    """Rows ``start:stop`` as MLflow records, serialised without the enclosing brackets."""
    if prediction.values is not None:
        records = [{"prediction": v} for v in prediction.values[start:stop].tolist()]
    else:
        assert prediction.labels is not None and prediction.probabilities is not None
        names = ("label", *signature.outputs.probability_names)
        records = [
            dict(zip(names, (label, *p), strict=True))
            for label, p in zip(
                prediction.labels[start:stop].tolist(),
                prediction.probabilities[start:stop].tolist(),
                strict=True,
            )
        ]
    return orjson.dumps(records, option=orjson.OPT_SERIALIZE_NUMPY)[1:-1]
