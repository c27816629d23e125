"""Optional dependencies: the one place that imports a module of an extra, or says how to install it.

The core install serves ONNX models (registry, CLI, server, Prometheus); everything else is an extra
chosen by job (pyproject.toml, docs/install.md). Code that needs an extra imports it through
:func:`require`, at the point of use, so that a missing package fails with the command that installs
it, never with a bare ``ModuleNotFoundError``:

    xgb = require("xgboost", "xgboost", "an XGBoost model")
    # MissingExtra: an XGBoost model needs xgboost, which is not installed:
    #   pip install 'modelport[xgboost]'
"""

from __future__ import annotations

import importlib
from types import ModuleType

from modelport.errors import MissingExtra, brief

__all__ = ["EXTRAS", "install_command", "require"]

EXTRAS = (
    "sklearn",
    "xgboost",
    "lightgbm",
    "validate",
    "grpc",
    "redis",
    "postgres",
    "s3",
    "tracing",
    "charts",
    "dask",
    "spark",
    "oidc",
    "all",
)
"""The extras of pyproject.toml (``tests/install`` checks that the two agree)."""

# Import names whose distribution is called otherwise, for messages that name what pip installs.
_DISTRIBUTIONS = {
    "sklearn": "scikit-learn",
    "grpc": "grpcio",
    "google": "protobuf",
    "opentelemetry": "opentelemetry-sdk",
    "jwt": "PyJWT",
}


def install_command(extra: str) -> str:
    """The command that installs ``extra`` into the running environment."""
    if extra not in EXTRAS:
        raise ValueError(f"unknown extra {extra!r}")
    return f"pip install 'modelport[{extra}]'"


def require(module: str, extra: str, purpose: str) -> ModuleType:
    """Import ``module`` (``"skops.io"``) and return it, or raise :class:`MissingExtra` naming the
    extra that provides it. ``purpose`` completes "… needs": what the caller is doing, e.g.
    ``"registering a scikit-learn model"``.

    A module that is present but fails to import (a version too old for us, a broken install) is
    reported with the same command, upgrading: the extra's version bounds are the fix."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        top = (exc.name or module).split(".")[0]
        missing = _DISTRIBUTIONS.get(top, top)
        raise MissingExtra(
            f"{purpose} needs {missing}, which is not installed: {install_command(extra)}"
        ) from None
    except ImportError as exc:
        upgrade = install_command(extra).replace("pip install", "pip install --upgrade", 1)
        raise MissingExtra(
            f"{purpose} needs {module}, which cannot be imported ({brief(exc)}): {upgrade}"
        ) from None
