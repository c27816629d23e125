"""The operations assets in deploy/: the Prometheus alert rules (checked and unit-tested by promtool),
the example scrape configuration, and the Grafana dashboard. Every query may name only metrics that
/metrics exports (`exported_names()`), and the dashboard shows every family."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml  # PyYAML, installed with mlflow-skinny and schemathesis

from modelport.monitoring.metrics import MONITOR_GAUGES, exported_names

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
DASHBOARD = ROOT / "deploy" / "grafana" / "modelport.json"
TOKEN_FILE = "/etc/prometheus/modelport.token"

# Series that are not modelport's but may be queried: Prometheus's own scrape health.
OTHER_METRICS = frozenset({"up"})
ALLOWED = exported_names() | OTHER_METRICS

# PromQL's aggregations, functions (Prometheus 2 and 3) and keywords: any other word is a metric name.
# fmt: off
AGGREGATIONS = frozenset({
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk",
    "quantile", "limitk", "limit_ratio"
})
FUNCTIONS = frozenset({
    "abs", "absent", "absent_over_time", "acos", "acosh", "asin", "asinh", "atan", "atanh",
    "avg_over_time", "ceil", "changes", "clamp", "clamp_max", "clamp_min", "cos", "cosh",
    "count_over_time", "day_of_month", "day_of_week", "day_of_year", "days_in_month", "deg", "delta",
    "deriv", "double_exponential_smoothing", "exp", "floor", "histogram_avg", "histogram_count",
    "histogram_fraction", "histogram_quantile", "histogram_stddev", "histogram_stdvar", "histogram_sum",
    "holt_winters", "hour", "idelta", "increase", "info", "irate", "label_join", "label_replace",
    "last_over_time", "ln", "log10", "log2", "mad_over_time", "max_over_time", "min_over_time", "minute",
    "month", "pi", "predict_linear", "present_over_time", "quantile_over_time", "rad", "rate", "resets",
    "round", "scalar", "sgn", "sin", "sinh", "sort", "sort_by_label", "sort_by_label_desc", "sort_desc",
    "sqrt", "stddev_over_time", "stdvar_over_time", "sum_over_time", "tan", "tanh", "time", "timestamp",
    "vector", "year"
})
KEYWORDS = frozenset({
    "and", "or", "unless", "atan2", "bool", "by", "without", "on", "ignoring", "group_left",
    "group_right", "offset", "inf", "nan"
})
# fmt: on

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_VARIABLE = re.compile(r"\$\{\w+(?::\w+)?\}|\$\w+")  # Grafana's $model, ${model:regex}, $__rate_interval
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_LABEL_LIST = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_OFFSET = re.compile(r"\boffset\s+-?\w+")
_NUMBER = re.compile(r"(?<![\w:])\d[\w.]*")
_NAME = re.compile(r"[A-Za-z_:][\w:]*")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: every identifier left once strings, Grafana
    variables, label matchers and lists, ranges, offsets and numbers are gone, that is not a function
    call or a keyword. A selector by ``__name__`` counts as the name ``__name__`` (never exported)."""
    text = _STRING.sub(" ", expr)
    if "__name__" in text:
        return {"__name__"}
    for pattern in (_VARIABLE, _MATCHERS, _RANGE, _LABEL_LIST, _OFFSET, _NUMBER):
        text = pattern.sub(" ", text)
    names = set()
    for match in _NAME.finditer(text):
        name = match.group()
        called = text[match.end() :].lstrip().startswith("(")
        if name in KEYWORDS or (called and name in FUNCTIONS | AGGREGATIONS):
            continue
        names.add(name)
    return names


def unknown_names(expr: str) -> set[str]:
    return metric_names(expr) - ALLOWED


def family_of(name: str) -> str:
    """The family a sample name belongs to (histogram series carry a suffix)."""
    return re.sub(r"_(bucket|sum|count)$", "", name)


def promtool(*args: str, cwd: Path = PROMETHEUS) -> str:
    path = shutil.which("promtool")
    assert path is not None, (
        "promtool is not on PATH: `make test` installs it (Debian package prometheus); "
        "or run `apt-get install prometheus` yourself"
    )
    done = subprocess.run([path, *args], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, (
        f"promtool {' '.join(args)} exited {done.returncode}:\n{done.stdout}{done.stderr}"
    )
    return done.stdout


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def rules() -> list[dict[str, Any]]:
    groups = load_yaml(PROMETHEUS / "alerts.yml")["groups"]
    assert [group["name"] for group in groups] == ["modelport"]
    return list(groups[0]["rules"])


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every panel, those inside collapsed rows included."""
    for panel in items:
        yield panel
        yield from panels(panel.get("panels", []))


def panel_exprs(board: dict[str, Any]) -> Iterator[tuple[str, str]]:
    for panel in panels(board["panels"]):
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"]


def variable_exprs(board: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """The PromQL inside each query variable (``label_values(SELECTOR, label)``, ``query_result(EXPR)``
    or plain PromQL)."""
    for variable in board["templating"]["list"]:
        if variable["type"] != "query":
            continue
        query = variable["query"]
        for text in (query["query"] if isinstance(query, dict) else query, variable.get("definition", "")):
            grafana = re.fullmatch(r"\s*(?:label_values\((.*),\s*\w+\s*\)|query_result\((.*)\))\s*", text)
            yield variable["name"], (grafana.group(1) or grafana.group(2)) if grafana else text


# --- Prometheus --------------------------------------------------------------------------------------


def test_alert_rules_are_valid() -> None:
    out = promtool("check", "rules", "alerts.yml")
    assert f"SUCCESS: {len(rules())} rules found" in out


def test_alert_rules_pass_their_unit_tests() -> None:
    promtool("test", "rules", "alerts.test.yml")


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    fires: set[str] = set()
    quiet: set[str] = set()
    for case in load_yaml(PROMETHEUS / "alerts.test.yml")["tests"]:
        for check in case.get("alert_rule_test", []):
            (fires if check.get("exp_alerts") else quiet).add(check["alertname"])
    alerts = {rule["alert"] for rule in rules()}
    assert alerts == {
        "ModelportHighErrorRate",
        "ModelportLatencyOverSLA",
        "ModelportFeatureDrift",
        "ModelportPredictionDrift",
        "ModelportAccuracyDrop",
        "ModelportModelNotReady",
        "ModelportDown",
        "ModelportPredictionLogDropping",
    }
    assert alerts - fires == set() and alerts - quiet == set()


def test_alert_rules_name_only_exported_metrics() -> None:
    for rule in rules():
        assert unknown_names(rule["expr"]) == set(), rule["alert"]
        assert metric_names(rule["expr"]), rule["alert"]
        assert rule["labels"]["severity"] in {"page", "ticket"}, rule["alert"]
        assert {"summary", "description"} <= set(rule["annotations"]), rule["alert"]


def test_scrape_config_is_valid(tmp_path: Path) -> None:
    # check config insists that the key file exists: check a copy that points at a temporary one.
    config = (PROMETHEUS / "prometheus.yml").read_text()
    assert TOKEN_FILE in config
    token = tmp_path / "modelport.token"
    token.write_text("mpk_example_secret\n")
    (tmp_path / "prometheus.yml").write_text(config.replace(TOKEN_FILE, str(token)))
    shutil.copy(PROMETHEUS / "alerts.yml", tmp_path / "alerts.yml")
    out = promtool("check", "config", "prometheus.yml", cwd=tmp_path)
    assert "SUCCESS: 1 rule files found" in out

    job = load_yaml(PROMETHEUS / "prometheus.yml")["scrape_configs"][0]
    assert job["job_name"] == "modelport" and job["metrics_path"] == "/metrics"
    assert job["authorization"] == {"type": "Bearer", "credentials_file": TOKEN_FILE}


# --- Grafana -----------------------------------------------------------------------------------------


def test_dashboard_names_only_exported_metrics() -> None:
    board = dashboard()
    checked = [*panel_exprs(board), *variable_exprs(board)]
    assert len(checked) > 20
    for where, expr in checked:
        assert unknown_names(expr) == set(), f"{where}: {expr}"
        assert metric_names(expr), f"{where}: {expr}"


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    # Grafana's variables replaced by values, each query becomes a recording rule for promtool to parse.
    values = {"$__rate_interval": "5m", "$model": ".*"}
    recorded = []
    for number, (_, expr) in enumerate(panel_exprs(dashboard())):
        for variable, value in values.items():
            expr = expr.replace(variable, value)
        recorded.append({"record": f"dashboard:query_{number}", "expr": expr})
    (tmp_path / "dashboard.rules.yml").write_text(
        yaml.safe_dump({"groups": [{"name": "d", "rules": recorded}]})
    )
    promtool("check", "rules", "dashboard.rules.yml", cwd=tmp_path)


def test_dashboard_shows_every_family() -> None:
    shown: dict[str, set[str]] = {}
    for title, expr in panel_exprs(dashboard()):
        for name in metric_names(expr):
            shown.setdefault(family_of(name), set()).add(title)
    wanted = set(MONITOR_GAUGES) - {"modelport_monitor_last_run_timestamp_seconds"}
    wanted |= {"modelport_requests_total", "modelport_request_duration_seconds"}
    assert wanted - set(shown) == set()


def test_dashboard_datasource_and_model_variable() -> None:
    board = dashboard()
    assert board["schemaVersion"] >= 39
    variables = {variable["name"]: variable for variable in board["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    assert variables["model"]["definition"] == "label_values(modelport_requests_total, model)"
    for panel in panels(board["panels"]):
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
        assert all(target["datasource"]["uid"] == "${DS_PROMETHEUS}" for target in panel["targets"])


# --- the check itself --------------------------------------------------------------------------------


def test_the_name_check_flags_unknown_metrics() -> None:
    assert unknown_names(
        'sum by (model) (rate(modelport_nonexistent_total{model=~"$model"}[$__rate_interval]))'
    ) == {"modelport_nonexistent_total"}
    # a bare selector that is not modelport's, and a typo in a function name, are seen too
    assert unknown_names("rate(http_requests_total[5m]) > 0") == {"http_requests_total"}
    assert unknown_names("histogram_quantle(0.99, modelport_request_duration_seconds_bucket)") == {
        "histogram_quantle"
    }
    assert unknown_names('{__name__=~"modelport_.*"}') == {"__name__"}
    # label names, keywords, functions, numbers and durations are not metric names
    assert metric_names(
        'histogram_quantile(0.99, sum by (model, le) (rate(a_bucket{le="+Inf"}[5m]))) > 0.25 '
        "and on (model) group_left () max without (instance) (b offset 10m) or c >= bool 1e3"
    ) == {"a_bucket", "b", "c"}
