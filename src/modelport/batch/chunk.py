"""One chunk of a batch job through the serving pipeline (docs/batch.md).

:meth:`Signature.table_batch` reads the columns (the columnar sibling of the request decoders, with
their checks), :meth:`Signature.violation_masks` makes the value checks that
:meth:`Signature.violations` counts online, :meth:`LoadedVersion.predict_batch` calls the runtime,
and labels and probabilities are encoded as the V2 answer encodes them (``tests/batch`` proves it bit
for bit). What is batch's own: per-row flags, the ``skip`` policy and naming the row a ``reject``
stops at.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pyarrow as pa

from modelport.errors import ValuesRejected
from modelport.registry.service import LoadedVersion
from modelport.runtimes.base import Prediction
from modelport.signature import Batch, MatrixBatch

__all__ = ["OnViolation", "ScoredChunk", "score_chunk"]

OnViolation = Literal["reject", "flag", "skip"]


@dataclass(slots=True)
class ScoredChunk:
    table: pa.Table  # the output rows
    flagged: int  # rows with a value outside the signature's bounds (scored, or skipped)
    skipped: pa.Table | None = None  # skip: row, --keep columns, reasons


# A chunk is scored this many rows at a time: a slice's matrix stays in the CPU's cache (a Parquet row
# group of a million rows is one chunk, but not one matrix).
SLICE_ROWS = 32_768


def score_chunk(
    table: pa.Table,
    first_row: int,
    loaded: LoadedVersion,
    policy: OnViolation,
    keep: Sequence[str],
    job_id: str,
) -> ScoredChunk:
    """Score ``table`` (the chunk's feature and ``--keep`` columns); ``first_row`` is the 0-based number
    of its first row in the input, for messages and the skipped rows' file."""
    outputs: list[pa.Table] = []
    skipped: list[pa.Table] = []
    flagged = 0
    for start in range(0, max(table.num_rows, 1), SLICE_ROWS):
        part = _score_slice(table.slice(start, SLICE_ROWS), first_row + start, loaded, policy, keep, job_id)
        outputs.append(part.table)
        flagged += part.flagged
        if part.skipped is not None:
            skipped.append(part.skipped)
    return ScoredChunk(
        pa.concat_tables(outputs) if len(outputs) > 1 else outputs[0],
        flagged,
        pa.concat_tables(skipped) if skipped else None,
    )


def _score_slice(
    table: pa.Table,
    first_row: int,
    loaded: LoadedVersion,
    policy: OnViolation,
    keep: Sequence[str],
    job_id: str,
) -> ScoredChunk:
    signature = loaded.signature
    rows = table.num_rows
    batch = signature.table_batch(table)
    masks = signature.violation_masks(batch, getattr(batch, "matrix", None))
    flagged_rows = np.zeros(rows, dtype=bool)
    for kinds in masks.values():
        for mask in kinds.values():
            flagged_rows |= mask
    flagged = int(flagged_rows.sum())
    if flagged and policy == "reject":
        raise ValuesRejected(_first_violation(table, first_row, masks, keep, loaded))
    reasons = _reasons(masks, flagged_rows, signature.names) if flagged else None
    kept, skipped = table, None
    if flagged and policy == "skip":
        assert reasons is not None
        chosen = ~flagged_rows
        batch = _rows_of(batch, chosen)
        skipped = pa.table(
            {
                "row": pa.array(np.flatnonzero(flagged_rows) + first_row + 1, type=pa.int64()),
                **{name: table.column(name).filter(pa.array(flagged_rows)) for name in keep},
                "reasons": pa.array(reasons[flagged_rows], type=pa.string()),
            }
        )
        kept = table.filter(pa.array(chosen))
        reasons = None
    count = kept.num_rows
    prediction = loaded.predict_batch(batch) if count else None
    columns: dict[str, pa.Array | pa.ChunkedArray] = {name: kept.column(name) for name in keep}
    columns.update(_encoded(prediction, loaded))
    columns["flags"] = pa.array(reasons, type=pa.string()) if reasons is not None else pa.repeat("", count)
    columns["model"] = pa.repeat(loaded.version.model, count)
    columns["version"] = pa.repeat(pa.scalar(loaded.version.number, pa.int64()), count)
    columns["job_id"] = pa.repeat(job_id, count)
    return ScoredChunk(pa.table(columns), flagged, skipped)


def _rows_of(batch: Batch, chosen: np.ndarray) -> Batch:
    matrix = getattr(batch, "matrix", None)
    if matrix is None:
        return {name: column[chosen] for name, column in batch.items()}
    kept = matrix[chosen]
    return MatrixBatch({name: kept[:, index] for index, name in enumerate(batch)}, kept)


def _encoded(prediction: Prediction | None, loaded: LoadedVersion) -> dict[str, pa.Array]:
    """Labels and probabilities (or a regressor's prediction) as the V2 answer encodes them: a label
    is its class value (INT64 when every class is an integer, else the class's text)."""
    signature = loaded.signature
    integer = all(isinstance(c, int) and not isinstance(c, bool) for c in signature.outputs.classes)
    if prediction is None:  # every row skipped: the columns, with no rows
        if signature.outputs.task == "regression":
            return {"prediction": pa.array([], type=pa.float64())}
        return {
            "label": pa.array([], type=pa.int64() if integer else pa.string()),
            **{name: pa.array([], type=pa.float64()) for name in signature.outputs.probability_names},
        }
    if prediction.values is not None:
        return {"prediction": pa.array(prediction.values.astype(np.float64, copy=False))}
    assert prediction.labels is not None and prediction.probabilities is not None
    if integer:
        labels = pa.array(prediction.labels.astype(np.int64))
    else:  # each distinct class turned into text once, as tensors_from_prediction turns each row
        distinct, positions = np.unique(prediction.labels.astype(str), return_inverse=True)
        labels = pa.DictionaryArray.from_arrays(
            pa.array(positions.reshape(-1).astype(np.int32)), pa.array(distinct.tolist(), type=pa.string())
        ).cast(pa.string())
    probabilities = prediction.probabilities.astype(np.float64, copy=False)
    encoded: dict[str, pa.Array] = {"label": labels}
    for index, name in enumerate(signature.outputs.probability_names):
        encoded[name] = pa.array(np.ascontiguousarray(probabilities[:, index]))
    return encoded


def _reasons(
    masks: dict[str, dict[str, np.ndarray]], flagged_rows: np.ndarray, names: list[str]
) -> np.ndarray:
    """Per row, ``feature:kind`` for each value out of bounds, ``;``-separated in signature order ("" when
    clean): text is made only for the flagged rows."""
    reasons = np.full(len(flagged_rows), "", dtype=object)
    for name in sorted(masks, key=names.index):
        for kind in sorted(masks[name], key=_KINDS.index):
            where = np.flatnonzero(masks[name][kind])
            tag = f"{name}:{kind}"
            reasons[where] = [f"{r};{tag}" if r else tag for r in reasons[where].tolist()]
    return reasons


_KINDS = ["below_range", "above_range", "missing", "unknown_category"]


def _first_violation(
    table: pa.Table,
    first_row: int,
    masks: dict[str, dict[str, np.ndarray]],
    keep: Sequence[str],
    loaded: LoadedVersion,
) -> str:
    index, name, kind = min(
        (int(np.flatnonzero(mask)[0]), name, kind)
        for name, kinds in masks.items()
        for kind, mask in kinds.items()
    )
    value = table.column(name)[index].as_py()
    keys = ", ".join(f"{k}={table.column(k)[index].as_py()!r}" for k in keep)
    feature = next(f for f in loaded.signature.features if f.name == name)
    bounds = (
        f" (trained on {feature.minimum:g} to {feature.maximum:g})"
        if kind in ("below_range", "above_range")
        and feature.minimum is not None
        and feature.maximum is not None
        else ""
    )
    return (
        f"row {first_row + index + 1:,}{f' ({keys})' if keys else ''}: feature {name!r} is "
        f"{kind.replace('_', ' ')}: {value!r}{bounds}, outside what {loaded.version.ref} was trained on; "
        "score with --on-violation flag or skip to go on"
    )
