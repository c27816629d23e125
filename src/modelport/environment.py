"""Snapshots of the library environment a version was registered (or is now served) in."""

from __future__ import annotations

import platform
import sys
from importlib import metadata
from typing import Any

__all__ = ["TRACKED_PACKAGES", "fingerprint", "snapshot"]

TRACKED_PACKAGES = (
    "numpy",
    "scipy",
    "pandas",
    "scikit-learn",
    "skops",
    "onnx",
    "onnxruntime",
    "skl2onnx",
    "onnxmltools",
    "xgboost",
    "xgboost-cpu",
    "lightgbm",
    "modelport",
)


def snapshot() -> dict[str, Any]:
    """Python, platform and the versions of every tracked ML package that is installed."""
    packages: dict[str, str] = {}
    for name in TRACKED_PACKAGES:
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return {
        "python": platform.python_version(),
        "implementation": sys.implementation.name,
        "platform": platform.platform(terse=True),
        "machine": platform.machine(),
        "packages": packages,
    }


def fingerprint(environment: dict[str, Any] | None = None) -> str:
    """A digest of what decides how a model computes here: Python, the machine architecture and the
    tracked package versions (not the kernel or host name, so replicas of one image agree)."""
    import hashlib
    import json

    env = environment if environment is not None else snapshot()
    key = {"python": env.get("python"), "machine": env.get("machine"), "packages": env.get("packages", {})}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
