"""modelport: a registry, serving gateway and governance layer for trained models.

The public Python API::

    import modelport
    version = modelport.register(model, name="credit-rating", sample=df, alias="production")
    registry = modelport.open_registry()
    registry.predict("credit-rating@production", df)
"""

from __future__ import annotations

from importlib import import_module as _import_module
from typing import TYPE_CHECKING, Any

from modelport import errors
from modelport._version import __version__

if TYPE_CHECKING:
    from pathlib import Path

    import pandas as pd

    from modelport.app import open_registry
    from modelport.registry import ModelRecord, ModelRef, Registry, VersionRecord, parse_ref
    from modelport.settings import Settings

# The public names are imported on first use (PEP 562): a process that only needs one submodule —
# the CLI printing its help, a preflight child reading a model file — does not pay for SQLAlchemy,
# the registry and the settings (about 0.4 s) by importing the package.
_LAZY = {
    "open_registry": "modelport.app",
    "ModelRecord": "modelport.registry",
    "ModelRef": "modelport.registry",
    "Registry": "modelport.registry",
    "VersionRecord": "modelport.registry",
    "parse_ref": "modelport.registry",
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
    return sorted(set(globals()) | set(__all__))


__all__ = [
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
    settings: Settings | None = None,
    **options: Any,
) -> VersionRecord:
    """Register an in-process model as a new version of ``name`` and return that version.

    Creates the registry (under ``MODELPORT_HOME``) on first use. ``options`` are those of
    :meth:`Registry.register`: ``alias``, ``description``, ``tags``, ``params``, ``metrics``,
    ``training_data``, ``code_revision``, ``parent``, ``target``, ``classes``, ``require_onnx``.
    """
    from modelport.app import open_registry

    registry = open_registry(settings, create=True)
    try:
        return registry.register(model, name=name, sample=sample, **options)
    finally:
        registry.close()
