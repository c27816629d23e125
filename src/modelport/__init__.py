"""modelport: a registry, serving gateway and governance layer for trained models.

The public Python API::

    import modelport
    version = modelport.register(model, name="credit-rating", sample=df, alias="production")
    registry = modelport.open_registry()
    registry.predict("credit-rating@production", df)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from modelport import errors
from modelport._version import __version__
from modelport.app import open_registry
from modelport.registry import ModelRecord, ModelRef, Registry, VersionRecord, parse_ref
from modelport.settings import Settings

if TYPE_CHECKING:
    from pathlib import Path

    import pandas as pd

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
    registry = open_registry(settings, create=True)
    try:
        return registry.register(model, name=name, sample=sample, **options)
    finally:
        registry.close()
