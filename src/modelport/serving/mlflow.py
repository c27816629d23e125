"""MLflow scoring protocol codec: ``/invocations`` bodies in, ``{"predictions": ...}`` out.

Accepted JSON keys: ``dataframe_split`` (columns + data), ``dataframe_records`` (list of records),
``instances`` and ``inputs`` (records, a column dict, or a row matrix in signature order), with an
optional ``params`` object; or a CSV body (``text/csv``). Predictions are one record per row — the
same records ``modelport predict`` prints — so MLflow clients and the CLI agree.

Tables are pandas frames here, as in MLflow itself; pandas is imported on the first MLflow request, so a
server that only speaks the Open Inference Protocol never loads it (about 80 MB of memory).
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

import numpy as np

from modelport.errors import InvalidInput
from modelport.registry.service import prediction_frame
from modelport.runtimes.base import Prediction
from modelport.serving.v2 import Limits, parse_json
from modelport.signature import Signature

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["UnsupportedMediaType", "decode_frame", "encode_predictions"]

_KEYS = ("dataframe_split", "dataframe_records", "instances", "inputs")


class UnsupportedMediaType(InvalidInput):
    """The body's content type is neither JSON nor CSV."""


def decode_frame(body: bytes, content_type: str, signature: Signature, limits: Limits) -> pd.DataFrame:
    import pandas as pd

    media = content_type.split(";")[0].strip().lower()
    if media == "text/csv":
        try:
            return pd.read_csv(io.BytesIO(body))
        except Exception as exc:
            raise InvalidInput(f"body is not readable CSV: {str(exc).splitlines()[0][:120]}") from None
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
        raise InvalidInput(f"unexpected key(s) {', '.join(sorted(unexpected))}")
    key, value = present[0], document[present[0]]
    try:
        if key == "dataframe_split":
            if not isinstance(value, dict) or "data" not in value:
                raise InvalidInput('"dataframe_split" needs "columns" and "data"')
            columns = value.get("columns") or signature.names
            return pd.DataFrame(value["data"], columns=columns)
        if key == "dataframe_records":
            if not isinstance(value, list) or not all(isinstance(r, dict) for r in value):
                raise InvalidInput('"dataframe_records" must be a list of objects')
            return pd.DataFrame.from_records(value, columns=signature.names if value else None)
        return _instances(value, signature)
    except InvalidInput:
        raise
    except (ValueError, TypeError) as exc:
        raise InvalidInput(f'"{key}" does not describe a table: {str(exc).splitlines()[0][:120]}') from None


def _instances(value: Any, signature: Signature) -> pd.DataFrame:
    import pandas as pd

    if isinstance(value, dict):  # column name -> values
        return pd.DataFrame({k: np.atleast_1d(np.asarray(v, dtype=object)) for k, v in value.items()})
    if isinstance(value, list) and value and all(isinstance(r, dict) for r in value):
        return pd.DataFrame.from_records(value)
    if isinstance(value, list) and value and all(isinstance(r, list) for r in value):
        return pd.DataFrame(value, columns=signature.names)
    raise InvalidInput('"instances"/"inputs" must be records, a column mapping, or rows in signature order')


def encode_predictions(prediction: Prediction, signature: Signature) -> dict[str, Any]:
    frame = prediction_frame(prediction, signature)
    return {"predictions": frame.to_dict(orient="records")}
