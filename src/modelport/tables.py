"""Reading and writing tables (CSV, Parquet, JSON) for registration samples and local predictions,
and the two rules for putting text that came from clients or the registry in front of people:

* :func:`escape_controls` shows control characters as escapes (``\\x1b``), so no text can move a
  terminal's cursor, retitle its window or hide what came before it;
* :func:`spreadsheet_safe` puts a ``'`` before a CSV cell a spreadsheet would run as a formula
  (``=``, ``+``, ``-``, ``@``, tab, carriage return: OWASP's "CSV injection"), unless it is a plain number.

pandas is imported only by the functions that need it: ``modelport usage --csv`` and ``serve`` do not.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from modelport.errors import FileMissing, InvalidInput, brief

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "TABLE_SUFFIXES",
    "escape_controls",
    "frame_from_json",
    "read_table",
    "spreadsheet_frame",
    "spreadsheet_safe",
    "write_csv",
    "write_table",
]

TABLE_SUFFIXES = (".csv", ".parquet", ".pq", ".json")

# C0 controls, DEL, C1 controls (0x9B is a one-byte CSI on some terminals), and the Unicode line
# separators and bidirectional overrides that reorder what a reader sees ("Trojan Source").
_SEPARATORS = r"\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069"
_CONTROL = re.compile(rf"[\x00-\x1f{_SEPARATORS}]")
_CONTROL_BUT_LINES = re.compile(rf"[\x00-\x08\x0b-\x1f{_SEPARATORS}]")  # keeps \t and \n
_NAMED = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")


def _escaped(found: re.Match[str]) -> str:
    char = found.group()
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape_controls(text: str, *, keep_lines: bool = False) -> str:
    """``text`` with every control character written as a visible escape (ESC as ``\\x1b``, a newline
    as ``\\n``). ``keep_lines`` leaves newlines and tabs alone (messages and CSV cells may span lines)."""
    pattern = _CONTROL_BUT_LINES if keep_lines else _CONTROL
    return pattern.sub(_escaped, text) if pattern.search(text) else text


def spreadsheet_safe(value: Any) -> Any:
    """A CSV cell no spreadsheet runs as a formula and no terminal obeys: text is returned with its
    control characters escaped and a ``'`` before a leading ``=``, ``+``, ``-``, ``@`` or tab, unless the
    text is a plain number (``-0.5`` stays a number). Anything that is not text is returned as it is."""
    if not isinstance(value, str):
        return value
    text = escape_controls(value, keep_lines=True)
    if text.startswith(_FORMULA_START) and not _NUMBER.fullmatch(text):
        return "'" + text
    return text


def write_csv(stream: TextIO, header: list[str], rows: Iterable[Iterable[Any]]) -> None:
    """The CLI's CSV exports: every cell through :func:`spreadsheet_safe`."""
    writer = csv.writer(stream)
    writer.writerow([spreadsheet_safe(name) for name in header])
    for row in rows:
        writer.writerow([spreadsheet_safe(cell) for cell in row])


def spreadsheet_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with its column names and text cells through :func:`spreadsheet_safe` (numbers stay
    numbers), for writing as CSV."""
    safe = frame.copy()
    safe.columns = list(range(len(frame.columns)))  # names may repeat: address columns by position
    for position, dtype in enumerate(frame.dtypes):
        if dtype.kind == "O":  # object, string and categorical columns: where text lives
            safe[position] = safe[position].map(spreadsheet_safe)
    safe.columns = [spreadsheet_safe(name) for name in frame.columns]
    return safe


def read_table(path: Path) -> pd.DataFrame:
    """A CSV, Parquet or JSON file as a DataFrame, with a clear error for anything else."""
    if not path.is_file():
        raise FileMissing(f"file {str(path)!r} does not exist or is not a regular file")
    suffix = path.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise InvalidInput(f"cannot read {path.name!r}: use a .csv, .parquet or .json file")
    import pandas as pd

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
    import pandas as pd

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
            spreadsheet_frame(frame).to_csv(path, index=False)
        elif suffix in (".parquet", ".pq"):
            frame.to_parquet(path, index=False)
        else:
            path.write_text(frame.to_json(orient="records"), encoding="utf-8")
    except OSError as exc:
        raise InvalidInput(f"cannot write {path.name!r}: {exc.strerror or brief(exc)}") from None
