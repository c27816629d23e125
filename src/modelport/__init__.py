"""modelport: a registry, serving gateway and governance layer for trained models.

The public Python API::

    import modelport
    version = modelport.register(model, name="credit-rating", sample=df, alias="production")
    registry = modelport.open_registry()
    registry.predict("credit-rating@production", df)
    modelport.Client("https://models.example.com", key=KEY).predict("credit-rating@production", df)

The registry must exist: ``modelport init`` creates it (or, from Python,
``modelport.open_registry(create=True)``).
"""

from __future__ import annotations

from importlib import import_module as _import_module
from typing import TYPE_CHECKING as _TYPE_CHECKING

from modelport import errors
from modelport._version import __version__

if _TYPE_CHECKING:  # annotations only: none of these is an attribute of the package
    from collections.abc import Mapping
    from pathlib import Path
    from typing import Any

    import pandas as pd

    from modelport.app import open_registry
    from modelport.client import AsyncClient, Client
    from modelport.registry.names import ModelRef, parse_ref
    from modelport.registry.records import ModelRecord, VersionRecord
    from modelport.registry.service import Registry
    from modelport.settings import Settings

# The public names are imported on first use (PEP 562): a process that only needs one submodule —
# the CLI printing its help, a preflight child reading a model file — does not pay for SQLAlchemy,
# the registry and the settings (about 0.4 s) by importing the package.
_LAZY = {
    "AsyncClient": "modelport.client",
    "Client": "modelport.client",
    "open_registry": "modelport.app",
    "ModelRecord": "modelport.registry.records",
    "ModelRef": "modelport.registry.names",
    "Registry": "modelport.registry.service",
    "VersionRecord": "modelport.registry.records",
    "parse_ref": "modelport.registry.names",
    "Settings": "modelport.settings",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'modelport' has no attribute {name!r}")
    value = getattr(_import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    # The public API only: not the submodules imported so far, nor this module's own helpers.
    return sorted(__all__)


__all__ = [
    "AsyncClient",
    "Client",
    "ModelRecord",
    "ModelRef",
    "Registry",
    "Settings",
    "VersionRecord",
    "__version__",
    "errors",
    "open_registry",
    "parse_ref",
    "register",
]


def register(
    model: Any,
    *,
    name: str,
    sample: pd.DataFrame | str | Path,
    target: str | None = None,
    alias: str | None = None,
    description: str = "",
    tags: Mapping[str, str] | None = None,
    params: Mapping[str, Any] | None = None,
    metrics: Mapping[str, float] | None = None,
    training_data: pd.DataFrame | str | Path | None = None,
    code_revision: str | None = None,
    parent: int | None = None,
    classes: list[Any] | None = None,
    require_onnx: bool = False,
    settings: Settings | None = None,
) -> VersionRecord:
    """Register an in-process model (scikit-learn, XGBoost, LightGBM or ONNX) as a new version of
    ``name`` and return that version.

    - ``sample``: rows like the training data (a DataFrame or a CSV/Parquet/JSON file); the signature's
      ranges and categories are learned from it and its rows prove the ONNX twin.
    - ``target``: the label column in ``sample``, dropped before use (gives reference accuracy).
    - ``alias``: point this alias (``production`` …) at the new version.
    - ``description``, ``tags``: free text and ``{key: value}`` strings.
    - ``params``, ``metrics``: training parameters (default: a scikit-learn model's own) and metrics.
    - ``training_data``: a DataFrame or file, fingerprinted (sha256) in the lineage.
    - ``code_revision``: default the git commit of the current directory.
    - ``parent``: the number of the version of ``name`` this one derives from.
    - ``classes``: class names in the model's order, for models that know them only as 0..k-1.
    - ``require_onnx``: fail unless an equivalent ONNX twin is produced.
    - ``settings``: where the registry is (default: ``MODELPORT_*`` variables, ``./.modelport``).

    The registry must exist (``modelport init``); a missing one is named, with the fix, in a
    :class:`~modelport.errors.StoreNotReady` error, and nothing is created.
    """
    from modelport.app import open_registry

    registry = open_registry(settings)
    try:
        return registry.register(
            model,
            name=name,
            sample=sample,
            target=target,
            alias=alias,
            description=description,
            tags=tags,
            params=params,
            metrics=metrics,
            training_data=training_data,
            code_revision=code_revision,
            parent=parent,
            classes=classes,
            require_onnx=require_onnx,
        )
    finally:
        registry.close()
