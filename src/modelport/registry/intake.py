"""What a user hands ``register``: an in-process model or a file, turned into a :class:`NativeModel`.

Accepted: scikit-learn estimators and pipelines (in-process, or a joblib/pickle file only with
``trust_pickle``), skops files, ONNX files, XGBoost JSON/UBJ, LightGBM text — and the in-process
XGBoost/LightGBM models (scikit-learn wrappers or boosters). Whatever comes in, what gets stored is a
safe, non-executable form: skops, XGBoost JSON/UBJ, LightGBM text or ONNX. A pickle is unpickled only
here, in the registering process, after an explicit opt-in, and is never stored.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelport.errors import FileMissing, InvalidInput, MissingExtra, UnknownFormat, UnsafeFormat, brief
from modelport.optional import require

__all__ = ["INPUT_FORMATS", "NativeModel", "detect_format", "from_file", "from_object", "read_bytes"]

INPUT_FORMATS = ("onnx", "skops", "xgboost-json", "xgboost-ubj", "lightgbm-text", "pickle")
_BY_SUFFIX = {
    ".onnx": "onnx",
    ".skops": "skops",
    ".json": "xgboost-json",
    ".ubj": "xgboost-ubj",
    ".txt": "lightgbm-text",
    ".lgb": "lightgbm-text",
    ".pkl": "pickle",
    ".pickle": "pickle",
    ".joblib": "pickle",
}
_MAX_FILE_BYTES = 2 << 30


@dataclass
class NativeModel:
    """A model ready to register: its safe stored form plus what registration needs to know."""

    kind: str  # library: sklearn | xgboost | lightgbm | onnx
    format: str  # stored format of the native artifact
    blob: bytes
    task: str  # classification | regression
    classes: list[Any]
    feature_names: list[str] | None
    n_features: int | None
    model: Any = None  # in-process object for conversion (None for ONNX)
    classes_named: bool = False  # the model itself names its classes (else they are 0..k-1)
    details: dict[str, Any] = field(default_factory=dict)
    source: str = "object"


def detect_format(path: Path, declared: str | None) -> str:
    if declared is not None:
        if declared not in INPUT_FORMATS:
            raise UnknownFormat(f"unknown format {declared!r}: use one of {', '.join(INPUT_FORMATS)}")
        return declared
    fmt = _BY_SUFFIX.get(path.suffix.lower())
    if fmt is None:
        raise UnknownFormat(
            f"cannot tell the format of {path.name!r} from its extension: pass --format, one of "
            + ", ".join(INPUT_FORMATS)
        )
    return fmt


def from_file(path: Path, fmt: str | None = None, *, trust_pickle: bool = False) -> NativeModel:
    """Read a model file. Pickles are refused unless ``trust_pickle``. Any other file is first read,
    converted and scored in a child process with CPU, memory and time limits (``preflight.py``), so
    a file that crashes or hangs its library is refused instead of taking this process down."""
    if not path.is_file():
        raise FileMissing(f"model file {str(path)!r} does not exist or is not a regular file")
    fmt = detect_format(path, fmt)
    if fmt == "pickle" and not trust_pickle:
        raise UnsafeFormat(
            f"{path.name!r} is a pickle, which runs code when loaded: re-save the model with skops, "
            "or pass --trust-pickle if you trust its author (it is converted and never stored as pickle)"
        )
    if path.stat().st_size > _MAX_FILE_BYTES:
        raise InvalidInput(f"model file {path.name!r} is larger than 2 GiB")
    data = path.read_bytes()
    if fmt == "skops":  # the archive's directory is safe to read here: a refusal without a child
        from modelport.registry.archives import check_zip

        check_zip(data, path.name)
    if fmt != "pickle":
        from modelport.registry.preflight import check_in_child

        # The bytes read once are the bytes checked: the child gets them on stdin, not the path.
        check_in_child(data, fmt, path.name)
    return read_bytes(data, path, fmt)


def read_bytes(data: bytes, path: Path, fmt: str) -> NativeModel:
    """Read a model file's bytes with the reader of ``fmt`` (``path`` names it in messages; only a
    pickle is read from it). Every tree in the model is checked before anything scores with it."""
    try:
        native = _READERS[fmt](data, path, fmt)
    # a preflight child reports MemoryError itself; a missing library says which extra to install
    except (InvalidInput, UnsafeFormat, MissingExtra, MemoryError):
        raise
    except Exception as exc:
        raise UnknownFormat(f"{path.name!r} is not a readable {fmt} model: {brief(exc)}") from None
    native.source = f"file:{fmt}"
    return native


def _read_pickle(data: bytes, path: Path, fmt: str) -> NativeModel:
    # Reached only with trust_pickle, in the registering process (never the server).
    model = require("joblib", "sklearn", "reading a pickle or joblib file").load(path)
    return from_object(model)


def _read_skops(data: bytes, path: Path, fmt: str) -> NativeModel:
    from modelport.registry.archives import check_zip
    from modelport.runtimes import skops

    check_zip(data, path.name)  # members, names, links and sizes, before skops inflates anything
    trusted = skops.check_trustworthy(data)
    estimator = skops.load_estimator(data, trusted)
    native = _sklearn(estimator, blob=data)
    native.details = {"trusted_types": trusted}
    return native


def _read_onnx(data: bytes, path: Path, fmt: str) -> NativeModel:
    import onnx

    from modelport.runtimes.onnx import check_self_contained

    proto = check_self_contained(data)
    onnx.checker.check_model(proto)
    return _onnx(proto, data)


def _read_xgboost(data: bytes, path: Path, fmt: str) -> NativeModel:
    from modelport.runtimes import xgboost as xgb_runtime

    if fmt == "xgboost-json":
        json.loads(data)  # a clear error for a file that is not JSON at all
    return _xgboost_booster(xgb_runtime.load_booster(data, fmt), fmt, data)


def _read_lightgbm(data: bytes, path: Path, fmt: str) -> NativeModel:
    from modelport.runtimes import lightgbm as lgb_runtime

    if not data.startswith(b"tree"):
        raise InvalidInput(f"{path.name!r} is not a LightGBM text model (it does not start with 'tree')")
    return _lightgbm_booster(lgb_runtime.load_booster(data), data)


_READERS = {
    "pickle": _read_pickle,
    "skops": _read_skops,
    "onnx": _read_onnx,
    "xgboost-json": _read_xgboost,
    "xgboost-ubj": _read_xgboost,
    "lightgbm-text": _read_lightgbm,
}


# -- in-process objects -------------------------------------------------------------------------


def from_object(model: Any) -> NativeModel:
    module = type(model).__module__.split(".")[0]
    if module == "xgboost":
        return _xgboost_object(model)
    if module == "lightgbm":
        return _lightgbm_object(model)
    if module == "onnx":
        return _onnx(model, bytes(model.SerializeToString()))
    if module == "sklearn" or (hasattr(model, "fit") and hasattr(model, "predict")):
        return _sklearn(model)
    raise UnknownFormat(
        f"cannot register a {type(model).__name__}: expected a scikit-learn estimator or pipeline, an "
        "XGBoost or LightGBM model, or an ONNX model"
    )


def _sklearn(estimator: Any, blob: bytes | None = None) -> NativeModel:
    require("sklearn", "sklearn", "registering a scikit-learn model")
    from sklearn.base import is_classifier

    from modelport.runtimes import skops
    from modelport.runtimes.trees import check_estimator_trees

    if not hasattr(estimator, "n_features_in_"):
        raise InvalidInput(f"the {type(estimator).__name__} is not fitted: train it before registering")
    # Objects and trusted pickles too: their trees are scored below (golden cases) and at serving.
    check_estimator_trees(estimator)
    details: dict[str, Any] = {}
    if blob is None:
        try:
            blob = skops.dump(estimator)
        except Exception as exc:
            raise UnsafeFormat(
                f"the {type(estimator).__name__} cannot be stored safely with skops: {exc}"
            ) from None
        details["trusted_types"] = skops.check_trustworthy(blob)
    names = getattr(estimator, "feature_names_in_", None)
    classifier = is_classifier(estimator)
    return NativeModel(
        kind="sklearn",
        format="skops",
        blob=blob,
        task="classification" if classifier else "regression",
        classes=[_plain(c) for c in estimator.classes_] if classifier else [],
        feature_names=[str(n) for n in names] if names is not None else None,
        n_features=int(estimator.n_features_in_),
        model=estimator,
        details=details,
        classes_named=classifier,
    )


def _xgboost_task(objective: str, num_class: int) -> tuple[str, list[Any]]:
    if objective.startswith(("binary:", "multi:")):
        return "classification", list(range(max(num_class, 2)))
    return "regression", []


def _xgboost_booster(booster: Any, fmt: str, blob: bytes, wrapper: Any = None) -> NativeModel:
    from modelport.runtimes import xgboost as xgb_runtime

    config = json.loads(booster.save_config())
    num_class = int(config["learner"]["learner_model_param"].get("num_class", "0") or 0)
    task, classes = _xgboost_task(xgb_runtime.objective(booster), num_class)
    return NativeModel(
        kind="xgboost",
        format=fmt,
        blob=blob,
        task=task,
        classes=classes,
        feature_names=list(booster.feature_names) if booster.feature_names else None,
        n_features=int(booster.num_features()),
        model=wrapper if wrapper is not None else booster,
    )


def _xgboost_object(model: Any) -> NativeModel:
    from modelport.runtimes import xgboost as xgb_runtime

    booster = model if type(model).__name__ == "Booster" else model.get_booster()
    blob = xgb_runtime.save(booster, "xgboost-json")
    return _xgboost_booster(booster, "xgboost-json", blob, wrapper=None if booster is model else model)


def _lightgbm_booster(booster: Any, blob: bytes, wrapper: Any = None) -> NativeModel:
    dump = booster.dump_model(num_iteration=0)
    objective = str(dump.get("objective", "")).split(" ")[0]
    classification = objective in ("binary", "multiclass", "multiclassova", "cross_entropy")
    classes: list[Any] = list(range(max(int(dump.get("num_class", 1)), 2))) if classification else []
    named = classification and wrapper is not None and hasattr(wrapper, "classes_")
    if named:
        classes = [_plain(c) for c in wrapper.classes_]
    names = [str(n) for n in booster.feature_name()]
    unnamed = names == [f"Column_{i}" for i in range(len(names))]
    return NativeModel(
        kind="lightgbm",
        format="lightgbm-text",
        blob=blob,
        task="classification" if classification else "regression",
        classes=classes,
        feature_names=None if unnamed else names,
        n_features=int(booster.num_feature()),
        model=booster,
        classes_named=named,
    )


def _lightgbm_object(model: Any) -> NativeModel:
    booster = model if type(model).__name__ == "Booster" else model.booster_
    blob = booster.model_to_string().encode("utf-8")
    return _lightgbm_booster(booster, blob, wrapper=None if booster is model else model)


def _onnx(proto: Any, blob: bytes) -> NativeModel:
    inputs = list(proto.graph.input)
    initializers = {i.name for i in proto.graph.initializer}
    inputs = [i for i in inputs if i.name not in initializers]
    if len(inputs) == 1:
        dims = inputs[0].type.tensor_type.shape.dim
        width = dims[1].dim_value if len(dims) == 2 and dims[1].dim_value > 0 else None
        names, n_features = None, width
    else:
        names, n_features = [i.name for i in inputs], len(inputs)
    outputs = list(proto.graph.output)
    classes = _onnx_class_labels(proto)
    task = "classification" if len(outputs) >= 2 or classes else "regression"
    return NativeModel(
        kind="onnx",
        format="onnx",
        blob=blob,
        task=task,
        classes=classes,
        feature_names=names,
        n_features=n_features,
        classes_named=bool(classes),
    )


def _onnx_class_labels(proto: Any) -> list[Any]:
    """Class labels declared by ai.onnx.ml classifier nodes (classlabels_* / ZipMap), if any."""
    from onnx import helper

    for node in proto.graph.node:
        for attribute in node.attribute:
            if attribute.name in ("classlabels_strings", "classlabels_int64s", "classlabels_ints"):
                values = helper.get_attribute_value(attribute)
                return [v.decode() if isinstance(v, bytes) else int(v) for v in values]
    return []


def _plain(value: Any) -> Any:
    """A class label as a plain JSON value (numpy scalars → Python)."""
    return value.item() if hasattr(value, "item") else value
