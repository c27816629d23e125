"""Turning a native model plus a sample into a version: signature, golden cases, ONNX twin, proof.

Pure computation: nothing here touches the database or the artifact store. :class:`Registry`
(``service.py``) stores what :func:`prepare` returns.
"""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from modelport.environment import snapshot
from modelport.errors import ConversionFailed, InvalidInput, ModelportError, SampleMismatch, brief
from modelport.progress import Progress, no_progress
from modelport.registry.intake import NativeModel
from modelport.registry.records import ArtifactRecord
from modelport.runtimes.base import Prediction, Runtime, load_runtime
from modelport.runtimes.convert import to_onnx
from modelport.runtimes.equivalence import compare
from modelport.settings import Settings
from modelport.signature import Feature, Outputs, Signature

__all__ = [
    "FLAG_RATE_THRESHOLD",
    "MIN_SAMPLE_ROWS",
    "Prepared",
    "fingerprint",
    "json_safe",
    "prediction_to_json",
    "prepare",
    "sample_check",
]

MIN_SAMPLE_ROWS = 10
FLAG_RATE_THRESHOLD = 0.01  # a sample whose ranges would flag more normal rows than this is warned about


@dataclass(frozen=True, slots=True)
class Prepared:
    signature: Signature
    golden: dict[str, Any]
    conversion: dict[str, Any]
    serving_format: str
    blobs: dict[str, tuple[str, bytes, dict[str, Any]]]  # role -> (format, bytes, details)
    environment: dict[str, Any]
    profile: dict[str, Any] | None = None
    sample_check: dict[str, Any] | None = None  # see sample_check()


def prepare(
    native: NativeModel,
    sample: pd.DataFrame,
    settings: Settings,
    *,
    target: str | None = None,
    classes: list[Any] | None = None,
    require_onnx: bool = False,
    progress: Progress = no_progress,
) -> Prepared:
    frame = align_sample(sample, native, target)
    if len(frame) < MIN_SAMPLE_ROWS:
        raise SampleMismatch(
            f"the sample has {len(frame)} row(s); at least {MIN_SAMPLE_ROWS} are needed to learn the "
            "features' ranges and to prove the ONNX twin on more than one point"
        )
    progress(f"learning the signature from {len(frame):,} sample rows")
    features = Signature.infer_features(frame)
    checked = sample_check(frame, features)
    golden_frame = frame.sample(n=min(settings.golden_rows, len(frame)), random_state=0)
    signature = Signature(features, Outputs(native.task, _classes(native, classes, frame)))  # type: ignore[arg-type]
    native_runtime = load_runtime(native.format, native.blob, native.details, signature)
    golden_batch = signature.batch(golden_frame)
    try:
        golden_prediction = native_runtime.predict(golden_batch)
    except ModelportError:
        raise
    except Exception as exc:
        raise SampleMismatch(f"the model cannot score the sample: {brief(exc)}") from None
    if len(golden_prediction) != len(golden_frame):
        raise InvalidInput(
            f"the model returns {len(golden_prediction)} result row(s) for {len(golden_frame)} input "
            "row(s): modelport serves models that score one row at a time"
        )
    golden = {
        "columns": signature.names,
        "rows": _rows_to_json(golden_frame),
        "outputs": prediction_to_json(golden_prediction),
        "computed_with": native.format,
    }
    blobs = {"native": (native.format, native.blob, native.details)}
    if native.kind == "onnx":
        conversion: dict[str, Any] = {"status": "not_needed", "reason": "the model was given as ONNX"}
        serving = "onnx"
        blobs = {"onnx": ("onnx", native.blob, {})}
    else:
        conversion, onnx_blob = _convert(
            native, signature, golden_frame, native_runtime, settings, progress=progress
        )
        if onnx_blob is not None:
            blobs["onnx"] = ("onnx", onnx_blob, twin_details(native))
            serving = "onnx"
        else:
            if require_onnx:
                raise ConversionFailed(
                    f"ONNX conversion required but {conversion['status']}: {conversion['reason']}"
                )
            serving = native.format
    truth = sample[target] if target is not None else None
    progress("profiling the sample for drift")
    profile = reference_profile(frame, signature, native_runtime, truth)
    native_runtime.close()
    return Prepared(signature, golden, conversion, serving, blobs, snapshot(), profile, checked)


def sample_check(frame: pd.DataFrame, features: list[Feature]) -> dict[str, Any]:
    """How often the value ranges learned from ``frame`` will flag new rows drawn from the same data,
    and — above :data:`FLAG_RATE_THRESHOLD` — a warning with the sample size that brings it under.

    A range is the sample's minimum and maximum. Among ``n`` sample values plus one new value, each is
    equally likely to be the largest (exchangeability), so a new value passes the maximum with
    probability 1/(n+1) when the maximum is a single value — for continuous data, always — and never
    beyond a maximum many rows share (a discrete value seen often); likewise the minimum. Per numeric
    feature that is 2/(n+1) at most; per text feature, the share of unseen categories is estimated by
    Good–Turing (categories seen once / n). With k features about 1 - Π(1 - p) of new rows get a flag,
    e.g. 45 % for 20 rows of 6 continuous features. Both shares shrink as 1/n, which gives the size
    needed. Booleans (range fixed at 0..1) and text without a category list are never flagged."""
    shares: list[float] = []
    for feature in features:
        column = frame[feature.name]
        if feature.dtype == "bool" or (not feature.numeric and feature.categories is None):
            continue
        if feature.numeric:
            values = pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
            values = values[np.isfinite(values)]
            if len(values):
                single_ends = int((values == values.min()).sum() == 1) + int(
                    (values == values.max()).sum() == 1
                )
                shares.append(single_ends / (len(values) + 1))
        else:
            counts = column.dropna().astype(str).value_counts()
            if len(counts):
                shares.append(float((counts == 1).sum()) / float(counts.sum()))
    rows = len(frame)
    rate = _flag_rate(shares, 1.0)
    result: dict[str, Any] = {
        "expected_flag_rate": round(rate, 4),
        "flag_rate_threshold": FLAG_RATE_THRESHOLD,
    }
    if rate > FLAG_RATE_THRESHOLD:
        low, high = rows, max(rows, 1) * 2
        while _flag_rate(shares, (rows + 1) / (high + 1)) > FLAG_RATE_THRESHOLD:
            low, high = high, high * 2
        while high - low > 1:  # the smallest size at or under the threshold
            middle = (low + high) // 2
            if _flag_rate(shares, (rows + 1) / (middle + 1)) > FLAG_RATE_THRESHOLD:
                low = middle
            else:
                high = middle
        result["rows_for_threshold"] = high
        result["warning"] = (
            f"the sample's {rows:,} rows give value ranges that flag about {rate:.1%} of new rows from "
            f"the same data as out of range (refused under the reject policy): a range learned from n "
            f"values misses about 2 in n+1 new ones, per feature; a sample of at least {high:,} rows "
            f"brings that under {FLAG_RATE_THRESHOLD:.0%}"
        )
    return result


def _flag_rate(shares: list[float], scale: float) -> float:
    """The share of rows with at least one flag, features taken as independent, each share × ``scale``."""
    kept = 1.0
    for share in shares:
        kept *= 1.0 - min(1.0, share * scale)
    return 1.0 - kept


def reference_profile(
    frame: pd.DataFrame, signature: Signature, runtime: Runtime, truth: pd.Series | None = None
) -> dict[str, Any]:
    """The version's reference for drift (monitoring/drift.py): its features and predictions on (up to
    20,000 rows of) the sample, and its accuracy there when the sample has the target."""
    from modelport.monitoring.drift import PROFILE_ROWS, build_profile
    from modelport.monitoring.live import scores

    rows = frame.sample(n=PROFILE_ROWS, random_state=0) if len(frame) > PROFILE_ROWS else frame
    batch = signature.batch(rows)
    try:
        prediction = runtime.predict(batch)
    except Exception as exc:
        raise SampleMismatch(f"the model cannot score the sample: {brief(exc)}") from None
    regression = signature.outputs.task == "regression"
    outputs = prediction.values if regression else prediction.labels
    assert outputs is not None
    accuracy = log_loss = None
    if truth is not None and not regression:
        labels = [str(v) for v in truth.loc[rows.index].tolist()]
        scored = scores(
            labels,
            [str(v) for v in np.asarray(outputs).tolist()],
            prediction.probabilities,
            list(signature.outputs.classes),
        )
        accuracy, log_loss = scored["accuracy"], scored.get("log_loss")
    return build_profile(
        {f.name: batch[f.name] for f in signature.features},
        {f.name: f.numeric for f in signature.features},
        np.asarray(outputs) if regression else np.asarray([str(v) for v in np.asarray(outputs).tolist()]),
        regression,
        accuracy=accuracy,
        log_loss=log_loss,
    )


def _convert(
    native: NativeModel,
    signature: Signature,
    golden_frame: pd.DataFrame,
    native_runtime: Runtime,
    settings: Settings,
    *,
    progress: Progress = no_progress,
) -> tuple[dict[str, Any], bytes | None]:
    tolerance = (
        settings.regression_tolerance
        if signature.outputs.task == "regression"
        else settings.probability_tolerance
    )
    progress(f"converting to ONNX ({_converter(native.kind)})")
    try:
        onnx_blob = to_onnx(native.kind, native.model, signature)
        twin = load_runtime("onnx", onnx_blob, twin_details(native), signature)
    except ModelportError as exc:
        return {"status": "failed", "reason": str(exc), "converter": _converter(native.kind)}, None
    rows = pd.concat(
        [golden_frame, signature.random_rows(settings.equivalence_rows, seed=0)], ignore_index=True
    )
    progress(f"proving the ONNX twin equivalent on {len(rows):,} rows")
    batch = signature.batch(rows)
    try:
        reference = native_runtime.predict(batch)
        report = compare(reference, twin.predict(batch), tolerance)
    except Exception as exc:
        return {"status": "failed", "reason": f"equivalence check failed: {brief(exc)}"}, None
    finally:
        twin.close()
    result = {
        "status": "equivalent" if report.equivalent else "not_equivalent",
        "reason": report.summary(),
        "converter": _converter(native.kind),
        "proof": report.to_dict(),
    }
    return result, onnx_blob if report.equivalent else None


def twin_details(native: NativeModel) -> dict[str, Any]:
    # Boosters know classes only as 0..k-1, so their ONNX label output is a class index.
    return {"label_output": "index"} if native.kind in ("xgboost", "lightgbm") else {}


def _converter(kind: str) -> str:
    return "skl2onnx" if kind == "sklearn" else "onnxmltools"


def align_sample(sample: pd.DataFrame, native: NativeModel, target: str | None) -> pd.DataFrame:
    """The sample's feature columns in the model's order, or :class:`SampleMismatch` saying why."""
    if not isinstance(sample, pd.DataFrame):
        raise InvalidInput("the sample must be a DataFrame, or a CSV/Parquet file")
    if len(sample) == 0:
        raise SampleMismatch("the sample has no rows")
    frame = sample.copy()
    frame.columns = [str(c) for c in frame.columns]
    duplicated = sorted(set(frame.columns[frame.columns.duplicated()]))
    if duplicated:
        raise SampleMismatch(f"the sample has duplicate column(s): {', '.join(duplicated[:20])}")
    if target is not None:
        if target not in frame.columns:
            raise SampleMismatch(f"target column {target!r} is not in the sample")
        frame = frame.drop(columns=[target])
    if native.feature_names is not None:
        expected = native.feature_names
        missing = [n for n in expected if n not in frame.columns]
        extra = [c for c in frame.columns if c not in expected]
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"lacks feature(s) the model expects: {', '.join(missing[:20])}")
            if extra:
                parts.append(
                    f"has column(s) the model does not use: {', '.join(extra[:20])} "
                    "(pass --target to drop the label column)"
                )
            raise SampleMismatch("the sample " + "; ".join(parts))
        return frame[expected]
    if native.n_features is not None and len(frame.columns) != native.n_features:
        raise SampleMismatch(
            f"the model expects {native.n_features} features but the sample has "
            f"{len(frame.columns)} column(s): {', '.join(list(frame.columns)[:20])}"
            + (" (pass --target to drop the label column)" if target is None else "")
        )
    return frame


def _classes(native: NativeModel, classes: list[Any] | None, frame: pd.DataFrame) -> list[Any]:
    if native.task == "regression":
        if classes is not None:
            raise InvalidInput("class names were given for a regression model")
        return []
    if classes is not None:
        if native.classes_named:
            raise InvalidInput(
                "the model already names its classes ("
                + ", ".join(map(str, native.classes[:10]))
                + "): class names can only be given to models that know them as 0..k-1"
            )
        names = [str(c).strip() for c in classes]
        if any(not n for n in names) or len(set(names)) != len(names):
            raise InvalidInput("class names must be non-empty and unique")
        if native.classes and len(names) != len(native.classes):
            raise InvalidInput(
                f"{len(names)} class name(s) given but the model has {len(native.classes)} classes"
            )
        return names
    if native.classes:
        return list(native.classes)
    raise InvalidInput("the model does not declare its classes: pass classes=[...] (--classes)")


def prediction_to_json(prediction: Prediction) -> dict[str, Any]:
    if prediction.values is not None:
        return {"values": [_json_float(v) for v in prediction.values.tolist()]}
    assert prediction.labels is not None and prediction.probabilities is not None
    return {
        "labels": [_plain(v) for v in prediction.labels.tolist()],
        "probabilities": [[_json_float(p) for p in row] for row in prediction.probabilities.tolist()],
    }


def _rows_to_json(frame: pd.DataFrame) -> list[list[Any]]:
    return [[_plain(v) for v in row] for row in frame.itertuples(index=False, name=None)]


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return _json_float(value)
    if value is None or value is pd.NA:
        return None
    return value


def json_safe(values: Mapping[str, Any] | None, what: str, *, numbers: bool = False) -> dict[str, Any]:
    """``values`` as plain JSON (numpy scalars unwrapped); refuses NaN/inf and unserialisable values.
    ``numbers=True`` requires every value to be a finite number (metrics)."""
    result: dict[str, Any] = {}
    for key, value in (values or {}).items():
        plain = value.item() if isinstance(value, np.generic) else value
        if numbers:
            if isinstance(plain, bool) or not isinstance(plain, int | float):
                raise InvalidInput(f"{what} {key!r} must be a number, got {plain!r:.40}")
            plain = float(plain)
        try:
            json.dumps(plain, allow_nan=False)
        except (TypeError, ValueError):
            raise InvalidInput(
                f"{what} {key!r} must be a finite number, string, boolean, list or mapping; got {plain!r:.40}"
            ) from None
        result[str(key)] = plain
    return result


def _json_float(value: float) -> float | None:
    return None if math.isnan(value) or math.isinf(value) else float(value)


# -- lineage ------------------------------------------------------------------------------------


def fingerprint(data: pd.DataFrame | str | Path | None) -> dict[str, Any] | None:
    """sha256 fingerprint of the training data: of a file's bytes, or of a DataFrame's content."""
    if data is None:
        return None
    if isinstance(data, pd.DataFrame):
        digest = hashlib.sha256()
        digest.update("\x1f".join(map(str, data.columns)).encode())
        digest.update(pd.util.hash_pandas_object(data, index=False).to_numpy().tobytes())
        return {"sha256": digest.hexdigest(), "rows": len(data), "columns": len(data.columns)}
    path = Path(data)
    if not path.is_file():
        raise InvalidInput(f"training data file {str(path)!r} does not exist")
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return {"sha256": digest.hexdigest(), "file": path.name, "bytes": path.stat().st_size}


def code_revision() -> str | None:
    """The git commit of the current directory (with ``+dirty`` if it has changes), if any."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False
        )
        if head.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def default_params(native: NativeModel) -> dict[str, Any]:
    """Scalar hyper-parameters of a scikit-learn model (nested estimators are left out)."""
    if native.kind != "sklearn" or not hasattr(native.model, "get_params"):
        return {}
    params = native.model.get_params(deep=True)
    scalars = {
        k: v for k, v in sorted(params.items()) if isinstance(v, int | float | str | bool | type(None))
    }
    # e.g. SimpleImputer(missing_values=nan): JSON has no NaN, so such values are kept as text.
    return {k: str(v) if isinstance(v, float) and not math.isfinite(v) else v for k, v in scalars.items()}


def artifact_records(digests: dict[str, str], prepared: Prepared) -> tuple[ArtifactRecord, ...]:
    return tuple(
        ArtifactRecord(role, fmt, digests[role], len(blob), details)
        for role, (fmt, blob, details) in sorted(prepared.blobs.items())
    )
