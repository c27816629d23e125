"""Cases generated from a signature, each with the behaviour the documentation promises for it.

A case is a small table (feature → values) and an expectation:

- ``score``: every row answered with a valid prediction;
- ``flag``: answered, and the answer reports a violation (the model's policy is ``flag``);
- ``reject``: refused with 400 naming the feature (policy ``reject``, or input no policy admits);
- ``score_or_reject``: either of the two — never a 5xx, never an invalid number.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from modelport.signature import Feature, Signature

__all__ = ["Case", "finite_probabilities", "generate", "random_rows", "values_for_json"]

LARGE_BATCH = 4096


@dataclass(frozen=True, slots=True)
class Case:
    check: str
    name: str
    columns: dict[str, list[Any]]
    expect: str
    feature: str | None = None  # the feature a refusal must name

    @property
    def rows(self) -> int:
        return len(next(iter(self.columns.values()))) if self.columns else 0


def _typical(feature: Feature) -> Any:
    if feature.dtype == "string":
        return (feature.categories or ["a"])[0]
    lo = feature.minimum if feature.minimum is not None else 0.0
    hi = feature.maximum if feature.maximum is not None else 1.0
    middle = lo / 2 + hi / 2
    return float(round(middle)) if feature.dtype == "int64" else float(middle)


def _one_row(signature: Signature, **overrides: Any) -> dict[str, list[Any]]:
    return {f.name: [overrides.get(f.name, _typical(f))] for f in signature.features}


def random_rows(signature: Signature, n: int, seed: int) -> dict[str, list[Any]]:
    frame = signature.random_rows(n, seed=seed)
    columns: dict[str, list[Any]] = {}
    for feature in signature.features:
        values = frame[feature.name].tolist()
        if feature.dtype == "string":
            columns[feature.name] = ["" if v is None else str(v) for v in values]
        else:
            columns[feature.name] = [None if v is None or v != v else float(v) for v in values]
    return columns


def generate(signature: Signature, policy: str, seed: int = 0) -> list[Case]:
    """Every generated case for a signature under a serving policy (``flag`` or ``reject``)."""
    outside = "reject" if policy == "reject" else "flag"
    cases = [
        Case(
            "in-range", "64 random rows within the observed ranges", random_rows(signature, 64, seed), "score"
        )
    ]
    for feature in signature.features:
        if feature.numeric and feature.minimum is not None and feature.maximum is not None:
            for label, value in (("minimum", feature.minimum), ("maximum", feature.maximum)):
                cases.append(
                    Case(
                        "boundary",
                        f"{feature.name} at its {label} {value:g}",
                        _one_row(signature, **{feature.name: value}),
                        "score",
                    )
                )
            span = max(abs(feature.maximum - feature.minimum), abs(feature.maximum), 1.0)
            above = feature.maximum + 10 * span
            below = feature.minimum - 10 * span
            for label, value in (("above", above), ("below", below)):
                cases.append(
                    Case(
                        "out-of-range",
                        f"{feature.name} {label} its range ({value:g})",
                        _one_row(signature, **{feature.name: value}),
                        outside,
                        feature.name,
                    )
                )
            cases.append(
                Case(
                    "nan-inf",
                    f"{feature.name} = +inf",
                    _one_row(signature, **{feature.name: float("inf")}),
                    "reject",
                    feature.name,
                )
            )
            cases.append(
                Case(
                    "nan-inf",
                    f"{feature.name} = -inf",
                    _one_row(signature, **{feature.name: float("-inf")}),
                    "reject",
                    feature.name,
                )
            )
            cases.append(
                Case(
                    "wrong-type",
                    f"{feature.name} = 'abc'",
                    _one_row(signature, **{feature.name: "abc"}),
                    "reject",
                    feature.name,
                )
            )
        if feature.numeric:
            expect = "score" if feature.missing_rate > 0 else "score_or_reject"
            cases.append(
                Case(
                    "missing",
                    f"{feature.name} missing (NaN)",
                    _one_row(signature, **{feature.name: None}),
                    expect,
                    feature.name,
                )
            )
        else:
            cases.append(
                Case(
                    "unknown-category",
                    f"{feature.name} = a category never seen in training",
                    _one_row(signature, **{feature.name: "never-seen-category"}),
                    outside if feature.categories else "score",
                    feature.name,
                )
            )
    empty: dict[str, list[Any]] = {f.name: [] for f in signature.features}
    cases.append(Case("empty-batch", "zero rows", empty, "score"))  # n rows in, n answers out
    cases.append(
        Case(
            "large-batch",
            f"{LARGE_BATCH} rows in one request",
            random_rows(signature, LARGE_BATCH, seed + 1),
            "score",
        )
    )
    return cases


def values_for_json(values: list[Any]) -> list[Any]:
    """NaN for missing numbers (the Open Inference Protocol JSON has no null numbers)."""
    return [float("nan") if v is None else v for v in values]


def finite_probabilities(probabilities: np.ndarray) -> bool:
    return bool(
        probabilities.size == 0
        or (
            np.isfinite(probabilities).all()
            and (probabilities >= -1e-9).all()
            and (probabilities <= 1 + 1e-9).all()
            and np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-4)
        )
    )
