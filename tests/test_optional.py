"""Optional dependencies (modelport/optional.py): a missing extra is named with its install command.

tests/install proves it in a real core-only venv for registration, validation, gRPC and PostgreSQL;
here, in a child process that has the other extras' packages hidden (``sys.modules[name] = None`` is
what Python does for a package that is absent), every other place that imports an extra.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from modelport.errors import MissingExtra, outcome_for
from modelport.optional import EXTRAS, install_command, require

ROOT = Path(__file__).parents[1]


def test_the_extras_are_the_ones_pyproject_declares() -> None:
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert set(EXTRAS) == set(declared) - {"dev"}
    assert install_command("charts") == "pip install 'modelport[charts]'"
    with pytest.raises(ValueError, match="unknown extra"):
        install_command("gpu")


def test_require_returns_the_module_or_names_the_extra() -> None:
    assert require("json", "charts", "reading JSON").dumps([]) == "[]"
    with pytest.raises(MissingExtra) as missing:
        require("modelport_test_absent.sub", "charts", "drawing a chart")
    assert str(missing.value) == (
        "drawing a chart needs modelport_test_absent, which is not installed: pip install 'modelport[charts]'"
    )
    # a server that lacks a runtime says so as "not supported here", on every protocol
    assert (outcome_for(missing.value).http, outcome_for(missing.value).grpc) == (501, "UNIMPLEMENTED")


HIDDEN = """
import sys
for name in ("xgboost", "lightgbm", "skops", "matplotlib", "redis", "onnxmltools", "opentelemetry"):
    sys.modules[name] = None  # what Python does for a package that is not installed

from modelport.errors import MissingExtra
from modelport.runtimes.base import load_runtime
from modelport.runtimes.convert import to_onnx
from modelport.signature import Feature, Outputs, Signature

signature = Signature([Feature("x", "float64")], Outputs("regression", []))


def chart():
    from modelport.monitoring.charts import drift_png

    drift_png({"versions": [], "threshold": 0.2, "window_seconds": 3600})


def redis():
    from modelport.security.ratelimit import RedisBuckets

    RedisBuckets("redis://127.0.0.1:1")


def tracing():
    from modelport.monitoring.tracing import Tracer

    Tracer("http://127.0.0.1:1/v1/traces")


cases = {
    "xgboost": lambda: load_runtime("xgboost-json", b"{}", {}, signature),
    "lightgbm": lambda: load_runtime("lightgbm-text", b"tree", {}, signature),
    "skops": lambda: load_runtime("skops", b"", {}, signature),
    "converter": lambda: to_onnx("xgboost", object(), signature),
    "chart": chart,
    "redis": redis,
    "tracing": tracing,
}
for name, case in cases.items():
    try:
        case()
    except MissingExtra as exc:
        print(f"{name}: {exc}")
    else:
        print(f"{name}: no error")
"""


def test_every_optional_import_names_its_extra() -> None:
    done = subprocess.run([sys.executable, "-c", HIDDEN], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    said = dict(line.split(": ", 1) for line in done.stdout.splitlines())
    assert said == {
        "xgboost": "an XGBoost model needs xgboost, which is not installed: pip install 'modelport[xgboost]'",
        "lightgbm": "a LightGBM model needs lightgbm, which is not installed: pip install 'modelport[lightgbm]'",
        "skops": "a scikit-learn model (stored with skops) needs skops, which is not installed: "
        "pip install 'modelport[sklearn]'",
        "converter": "converting an XGBoost model to ONNX needs onnxmltools, which is not installed: "
        "pip install 'modelport[xgboost]'",
        "chart": "a drift chart (--png/--html) needs matplotlib, which is not installed: "
        "pip install 'modelport[charts]'",
        "redis": "MODELPORT_REDIS_URL (rate limits shared in Redis) needs redis, which is not installed: "
        "pip install 'modelport[redis]'",
        "tracing": "MODELPORT_TRACING (OpenTelemetry traces) needs opentelemetry-sdk, which is not installed: "
        "pip install 'modelport[tracing]'",
    }
