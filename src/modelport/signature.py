"""Signatures: the named, typed inputs a version accepts and the outputs it returns.

Inferred at registration from a sample (DataFrame, CSV or Parquet): each feature's type, observed
minimum and maximum, categories (for text columns) and missing-value rate; the outputs are the label
and, for classifiers, one probability per class, named after the model's classes. The signature also
turns a table into the column batch runtimes consume, and draws random rows within the observed
ranges for the equivalence proof.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from modelport.errors import InputMismatch

if TYPE_CHECKING:  # pandas is imported where tables are read, never on the serving hot path
    import pandas as pd

__all__ = ["Batch", "Feature", "Outputs", "Signature", "check_float32_range"]

Batch = dict[str, np.ndarray]
"""Input columns by feature name, in signature order: float64 for numbers, object for text."""


class MatrixBatch(dict[str, np.ndarray]):
    """A :data:`Batch` whose columns are views of one float64 ``[rows, features]`` matrix in signature
    order (an all-numeric request sent as one 2-D tensor): a runtime that wants the matrix takes it as
    it came instead of stacking the columns again."""

    __slots__ = ("matrix",)

    def __init__(self, columns: dict[str, np.ndarray], matrix: np.ndarray) -> None:
        super().__init__(columns)
        self.matrix = matrix


DType = Literal["float64", "int64", "bool", "string"]
_MAX_CATEGORIES = 100
_FLOAT32_MAX = float(np.finfo(np.float32).max)


def check_float32_range(values: np.ndarray, names: list[str]) -> None:
    """Refuse infinities and magnitudes beyond float32 (what models compute in). ``values`` is one
    column (``names`` = its feature) or a ``[rows, features]`` matrix; one vectorised pass, and only on
    failure the search for the feature to name. NaN compares False, so missing values pass."""
    too_big = np.abs(values) > _FLOAT32_MAX
    if not too_big.any():
        return
    column = 0 if too_big.ndim == 1 else int(np.flatnonzero(too_big.any(axis=0))[0])
    raise InputMismatch(
        f"feature {names[column]!r} has an infinite value or one beyond ±3.4e38 "
        "(the float32 range models compute in)"
    )


@dataclass(frozen=True, slots=True)
class Feature:
    name: str
    dtype: DType
    minimum: float | None = None
    maximum: float | None = None
    categories: list[str] | None = None
    missing_rate: float = 0.0

    @property
    def numeric(self) -> bool:
        return self.dtype != "string"


@dataclass(frozen=True, slots=True)
class Outputs:
    task: Literal["classification", "regression"]
    classes: list[Any] = field(default_factory=list)

    @property
    def probability_names(self) -> list[str]:
        return [f"p_{c}" for c in self.classes]


@dataclass(frozen=True, slots=True)
class Signature:
    features: list[Feature]
    outputs: Outputs
    # Derived once: read on every request.
    names: list[str] = field(init=False, compare=False, repr=False)
    all_numeric: bool = field(init=False, compare=False, repr=False)
    _numeric: list[str] = field(init=False, compare=False, repr=False)
    _lower: np.ndarray = field(init=False, compare=False, repr=False)
    _upper: np.ndarray = field(init=False, compare=False, repr=False)
    _never_missing: np.ndarray = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        numeric = [f for f in self.features if f.numeric]
        setattr_ = object.__setattr__
        setattr_(self, "names", [f.name for f in self.features])
        setattr_(self, "all_numeric", len(numeric) == len(self.features))
        setattr_(self, "_numeric", [f.name for f in numeric])
        bound = [
            (-np.inf if f.minimum is None else f.minimum, np.inf if f.maximum is None else f.maximum)
            for f in numeric
        ]
        setattr_(self, "_lower", np.array([b[0] for b in bound], dtype=np.float64))
        setattr_(self, "_upper", np.array([b[1] for b in bound], dtype=np.float64))
        setattr_(self, "_never_missing", np.array([f.missing_rate == 0 for f in numeric], dtype=bool))

    # -- value-level checks ---------------------------------------------------------------------

    def violations(self, batch: Batch, matrix: np.ndarray | None = None) -> dict[str, dict[str, int]]:
        """Values outside what the model saw at registration, as ``{feature: {kind: rows}}`` with kinds
        ``below_range``, ``above_range``, ``missing`` (where the sample had none) and
        ``unknown_category``. Empty when everything is in bounds (one vectorised pass for numbers).
        ``matrix``: the numeric features already as one ``[rows, features]`` array, if the caller has it."""
        return {
            name: {kind: int(mask.sum()) for kind, mask in kinds.items()}
            for name, kinds in self.violation_masks(batch, matrix).items()
        }

    def violation_masks(
        self, batch: Batch, matrix: np.ndarray | None = None
    ) -> dict[str, dict[str, np.ndarray]]:
        """The checks of :meth:`violations` row by row: ``{feature: {kind: boolean mask over rows}}``,
        only for the feature/kind pairs that occur (a batch job's per-row flags, docs/batch.md)."""
        found: dict[str, dict[str, np.ndarray]] = {}
        if self._numeric:
            if matrix is None:
                matrix = np.column_stack([batch[name] for name in self._numeric])
            below = matrix < self._lower
            above = matrix > self._upper
            missing = np.isnan(matrix) & self._never_missing
            if (below | above | missing).any():  # one reduction on the usual, clean request
                for kind, mask in (("below_range", below), ("above_range", above), ("missing", missing)):
                    for index in np.flatnonzero(mask.any(axis=0)):
                        found.setdefault(self._numeric[index], {})[kind] = mask[:, index]
        for feature in self.features:
            if feature.numeric:
                continue
            column = batch[feature.name]
            absent = np.array([v is None for v in column], dtype=bool)
            if feature.missing_rate == 0 and absent.any():
                found.setdefault(feature.name, {})["missing"] = absent
            if feature.categories is not None:
                known = set(feature.categories)
                unknown = np.array(
                    [not a and v not in known for v, a in zip(column, absent, strict=True)], dtype=bool
                )
                if unknown.any():
                    found.setdefault(feature.name, {})["unknown_category"] = unknown
        return found

    @staticmethod
    def describe_violations(found: dict[str, dict[str, int]]) -> str:
        return "; ".join(
            f"{name}: "
            + ", ".join(f"{kind.replace('_', ' ')} in {rows} row(s)" for kind, rows in kinds.items())
            for name, kinds in found.items()
        )

    # -- (de)serialisation ----------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "inputs": [asdict(f) for f in self.features],
            "outputs": {"task": self.outputs.task, "classes": list(self.outputs.classes)},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Signature:
        return cls(
            features=[Feature(**f) for f in data["inputs"]],
            outputs=Outputs(task=data["outputs"]["task"], classes=list(data["outputs"]["classes"])),
        )

    # -- inference ------------------------------------------------------------------------------

    @staticmethod
    def infer_features(sample: pd.DataFrame) -> list[Feature]:
        import pandas as pd

        features = []
        for name in sample.columns:
            column = sample[name]
            missing = float(column.isna().mean()) if len(column) else 0.0
            present = column.dropna()
            if pd.api.types.is_bool_dtype(column):
                features.append(Feature(str(name), "bool", 0.0, 1.0, None, missing))
            elif pd.api.types.is_numeric_dtype(column):
                dtype: DType = "int64" if pd.api.types.is_integer_dtype(column) else "float64"
                finite = present[np.isfinite(present.astype("float64"))]
                lo = float(finite.min()) if len(finite) else None
                hi = float(finite.max()) if len(finite) else None
                features.append(Feature(str(name), dtype, lo, hi, None, missing))
            else:
                values = sorted({str(v) for v in present})
                categories = values if len(values) <= _MAX_CATEGORIES else None
                features.append(Feature(str(name), "string", None, None, categories, missing))
        return features

    # -- tables to batches ----------------------------------------------------------------------

    def batch(self, frame: pd.DataFrame) -> Batch:
        """Columns of ``frame`` in signature order, converted to the runtime dtypes.

        Raises :class:`InputMismatch` naming missing or unexpected columns, or a column whose values
        cannot be read as its feature's type.
        """
        import pandas as pd

        present = [str(c) for c in frame.columns]
        duplicated = sorted({c for c in present if present.count(c) > 1})
        if duplicated:
            raise InputMismatch(f"input has duplicate column(s): {', '.join(duplicated[:20])}")
        missing = [n for n in self.names if n not in present]
        extra = [c for c in present if c not in self.names]
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"missing feature(s) {', '.join(missing)}")
            if extra:
                parts.append(f"unexpected column(s) {', '.join(extra[:20])}")
            raise InputMismatch("input does not match the signature: " + "; ".join(parts))
        batch: Batch = {}
        for feature in self.features:
            column = frame[feature.name]
            if feature.numeric:
                try:
                    numbers = pd.to_numeric(column, errors="raise").astype("float64")
                except (ValueError, TypeError):
                    raise _not_numeric(feature) from None
                batch[feature.name] = _checked(feature, numbers.to_numpy(dtype=np.float64, na_value=np.nan))
            else:
                batch[feature.name] = _texts(column)
        return batch

    def table_batch(self, table: Any) -> Batch:
        """A pyarrow table's feature columns in signature order (batch scoring, docs/batch.md): numeric
        features as float64 (nulls → NaN) with the float32-range check every decoder makes, text
        features as :meth:`batch` reads them. All-numeric signatures get a :class:`MatrixBatch`: the
        matrix is filled column by column once, and the value checks and the runtime read it as the
        2-D tensor of a V2 request is read."""
        import pyarrow as pa
        import pyarrow.compute as pc

        rows = table.num_rows
        numbers: dict[str, np.ndarray] = {}
        for feature in self.features:
            if not feature.numeric:
                continue
            column = table.column(feature.name)
            try:
                column = pc.cast(column, pa.float64())
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                raise _not_numeric(feature) from None
            numbers[feature.name] = column.to_numpy()
        if self.all_numeric:
            matrix = np.empty((rows, len(self.features)), dtype=np.float64)
            for index, name in enumerate(self.names):
                matrix[:, index] = numbers[name]
            check_float32_range(matrix, self.names)
            return MatrixBatch({name: matrix[:, index] for index, name in enumerate(self.names)}, matrix)
        batch: Batch = {}
        for feature in self.features:
            if feature.numeric:
                batch[feature.name] = _checked(feature, numbers[feature.name])
            else:
                batch[feature.name] = _texts(table.column(feature.name).to_pylist())
        return batch

    def rows_batch(self, columns: list[str], rows: list[list[Any]]) -> Batch:
        """JSON rows (as golden cases are stored) in signature order, without pandas: the warm-up of
        every served version goes through here."""
        if sorted(columns) != sorted(self.names):
            raise InputMismatch("the rows' columns do not match the signature")
        position = {name: index for index, name in enumerate(columns)}
        return {
            feature.name: _column(feature, [row[position[feature.name]] for row in rows])
            for feature in self.features
        }

    def columns_batch(self, columns: dict[str, list[Any]]) -> Batch:
        """JSON values by column (MLflow's column form and records), read as :meth:`rows_batch` reads
        rows, without pandas."""
        if sorted(columns) != sorted(self.names):
            raise InputMismatch("the columns do not match the signature")
        return {feature.name: _column(feature, columns[feature.name]) for feature in self.features}

    def frame(self, batch: Batch) -> pd.DataFrame:
        import pandas as pd

        return pd.DataFrame({name: batch[name] for name in self.names})

    def random_rows(self, n: int, seed: int = 0) -> pd.DataFrame:
        """``n`` rows drawn uniformly within each feature's observed range (or categories), with
        missing values at the observed rate. Used to prove a converted model equivalent."""
        import pandas as pd

        rng = np.random.default_rng(seed)
        columns: dict[str, Any] = {}
        for f in self.features:
            if f.dtype == "string":
                cats = f.categories or ["a"]
                values: Any = rng.choice(np.array(cats, dtype=object), size=n)
            elif f.dtype == "bool":
                values = rng.integers(0, 2, size=n).astype(np.float64)
            else:
                lo = f.minimum if f.minimum is not None else 0.0
                hi = f.maximum if f.maximum is not None else 1.0
                # lo·(1-u) + hi·u cannot overflow for finite bounds, unlike lo + (hi-lo)·u.
                u = rng.random(n)
                values = lo * (1.0 - u) + hi * u if hi > lo else np.full(n, lo)
                if f.dtype == "int64":
                    values = np.round(values)
            if f.missing_rate > 0:
                mask = rng.random(n) < f.missing_rate
                values = values.astype(object) if f.dtype == "string" else values.astype(np.float64)
                values[mask] = None if f.dtype == "string" else np.nan
            columns[f.name] = values
        return pd.DataFrame(columns)


def _column(feature: Feature, values: list[Any]) -> np.ndarray:
    """One feature's JSON values as its runtime column: float64 (missing → NaN) or text objects."""
    if not feature.numeric:
        return _texts(values)
    try:
        numbers = np.array(values, dtype=np.float64)  # the usual case: numbers only, at C speed
    except (ValueError, TypeError):
        try:
            numbers = np.array([np.nan if _is_missing(v) else v for v in values], dtype=np.float64)
        except (ValueError, TypeError):
            raise _not_numeric(feature) from None
    return _checked(feature, numbers)


def _not_numeric(feature: Feature) -> InputMismatch:
    return InputMismatch(f"feature {feature.name!r} must be numeric ({feature.dtype})")


def _checked(feature: Feature, numbers: np.ndarray) -> np.ndarray:
    check_float32_range(numbers, [feature.name])
    return numbers


def _texts(values: Any) -> np.ndarray:
    """Text features as an object column: strings, with ``None`` for every kind of missing value."""
    return np.array([None if _is_missing(v) else str(v) for v in values], dtype=object)


def _is_missing(value: Any) -> bool:
    if value is None or type(value).__name__ == "NAType":  # pandas.NA, without importing pandas
        return True
    return isinstance(value, float) and math.isnan(value)
