"""Reading and writing tables (CSV, Parquet, JSON) for registration samples and local predictions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from modelport.errors import FileMissing, InvalidInput, brief

__all__ = ["TABLE_SUFFIXES", "frame_from_json", "read_table", "write_table"]

TABLE_SUFFIXES = (".csv", ".parquet", ".pq", ".json")


def read_table(path: Path) -> pd.DataFrame:
    """A CSV, Parquet or JSON file as a DataFrame, with a clear error for anything else."""
    if not path.is_file():
        raise FileMissing(f"file {str(path)!r} does not exist or is not a regular file")
    suffix = path.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise InvalidInput(f"cannot read {path.name!r}: use a .csv, .parquet or .json file")
    try:
        if suffix == ".csv":
            return pd.read_csv(path)
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path)
        return frame_from_json(json.loads(path.read_text(encoding="utf-8")))
    except (InvalidInput, FileMissing):
        raise
    except Exception as exc:
        raise InvalidInput(f"cannot read {path.name!r} as {suffix[1:]}: {brief(exc)}") from None


def frame_from_json(document: Any) -> pd.DataFrame:
    """Rows from JSON: a list of records, ``{"columns": [...], "data": [[...]]}`` (split), or
    ``{"records": [...]}``; a single record object is one row."""
    if isinstance(document, dict) and "columns" in document and "data" in document:
        columns, data = document["columns"], document["data"]
        if not isinstance(columns, list) or not isinstance(data, list):
            raise InvalidInput('JSON "columns" and "data" must be lists')
        if any(not isinstance(row, list) or len(row) != len(columns) for row in data):
            raise InvalidInput('every JSON "data" row must be a list as long as "columns"')
        return pd.DataFrame(data, columns=[str(c) for c in columns])
    if isinstance(document, dict) and isinstance(document.get("records"), list):
        document = document["records"]
    if isinstance(document, dict):
        document = [document]
    if not isinstance(document, list) or not all(isinstance(r, dict) for r in document):
        raise InvalidInput(
            'JSON input must be a list of records, {"records": [...]} or {"columns": [...], "data": [...]}'
        )
    return pd.DataFrame.from_records(document)


def write_table(frame: pd.DataFrame, path: Path) -> None:
    suffix = path.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise InvalidInput(f"cannot write {path.name!r}: use a .csv, .parquet or .json file")
    if not path.parent.is_dir():
        raise FileMissing(f"cannot write {path.name!r}: its directory does not exist")
    try:
        if suffix == ".csv":
            frame.to_csv(path, index=False)
        elif suffix in (".parquet", ".pq"):
            frame.to_parquet(path, index=False)
        else:
            path.write_text(frame.to_json(orient="records"), encoding="utf-8")
    except OSError as exc:
        raise InvalidInput(f"cannot write {path.name!r}: {exc.strerror or brief(exc)}") from None
