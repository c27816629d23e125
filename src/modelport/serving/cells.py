"""Checks the table codecs share (MLflow's in serving/mlflow.py, TF Serving's in serving/tfserving.py):
a table's size bounded before any loop over it, cells that are scalars, and names listed briefly in a
message. Each codec words its refusals in its own protocol's terms ("column"/"cells" for MLflow,
"feature"/"values" for TF Serving); the logic is here once."""

from __future__ import annotations

from typing import Any

from modelport.errors import InvalidInput

__all__ = ["CELLS", "NAMED", "bounded", "first_non_scalar", "listed"]

CELLS = frozenset({str, int, float, bool, type(None)})  # what one cell of a JSON table may hold
NAMED = 20  # names listed in a message at most


def listed(names: list[str]) -> str:
    """Up to :data:`NAMED` names, each cut at 40 characters, ``…`` when there are more."""
    shown = ", ".join(repr(n[:40]) for n in names[:NAMED])
    return shown + (", …" if len(names) > NAMED else "")


def bounded(rows: int, width: int, limit: int, unit: str) -> None:
    """Refuse a table of more than ``limit`` values, before anything loops over its rows."""
    if rows * width > limit:
        raise InvalidInput(f"{rows:,} row(s) × {width} {unit}(s) is over the limit of {limit:,} values")


def first_non_scalar(cells: list[Any]) -> tuple[int, str] | None:
    """The index of the first cell that is not a scalar and whether it is a ``list`` or an ``object``,
    or None when every cell is one (the usual case: one C-speed scan of the cells' types)."""
    if set(map(type, cells)) <= CELLS:
        return None
    index = next(i for i, v in enumerate(cells) if type(v) not in CELLS)
    return index, "list" if isinstance(cells[index], list) else "object"
