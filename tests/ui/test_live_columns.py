"""The console's live numbers (ui/live.py) and a model's history: requests per second, p99 and errors on
the Models page from real inference requests through the real keyed app, drift and accuracy from a state
the real monitor wrote, the metric chart and table and the alias history on a model's page — and the
rate, error and quantile arithmetic against numbers worked out by hand."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pandas as pd
import pytest
from prometheus_client import CollectorRegistry

from modelport.monitoring.metrics import Metrics
from modelport.monitoring.monitor import DriftSettings, Monitor, logged
from modelport.ui import live
from tests.conftest import invoke_cli, until
from tests.security.conftest import (
    AUTH_FAILURE_BURST,
    INFER,
    ROW,
    Keys,
    bearer,
    keyed_home,
    keys,
    open_home,
)
from tests.serving.conftest import InProcess, serve_in_process, start_server, stop_server
from tests.ui.test_console import csrf_of, sign_in

__all__ = ["keyed_home", "keys"]  # fixtures, imported for this module

METRICS = [{"accuracy": 0.81, "auc": 0.9}, {"accuracy": 0.875, "auc": 0.93}]
BAD = {"inputs": [{**ROW, "shape": [1, 5], "data": [[0.1, 0.2, 0.3, 0.4, 0.5]]}]}  # one input short


@pytest.fixture(scope="module")
def app(keyed_home: Path, keys: Keys, data: pd.DataFrame, sklearn_model: object) -> Iterator[InProcess]:
    """The keyed registry plus ``scored`` (two versions with registration metrics), ``credit`` logging
    every prediction; the app's own monitor is off (interval 0): the test runs the real one itself."""
    registry = open_home(keyed_home)
    try:
        for number, metrics in enumerate(METRICS, 1):
            registry.register(
                sklearn_model,
                name="scored",
                sample=data,
                target="label",
                metrics=metrics,
                alias="production" if number == 1 else None,
            )
    finally:
        registry.close()
    assert invoke_cli(keyed_home, "log-policy", "credit", "--sample", "1").returncode == 0
    with serve_in_process(
        keyed_home,
        insecure_dev=False,
        auth_failure_burst=AUTH_FAILURE_BURST,
        monitor_interval=0,
        prediction_log_flush_seconds=0.2,
    ) as running:
        yield running


def row_of(html: str, model: str) -> dict[str, str]:
    """The live cells of ``model``'s row on the Models page."""
    found = re.search(rf'<a href="/ui/models/{re.escape(model)}">{re.escape(model)}</a>.*?</tr>', html, re.S)
    assert found, html[:2000]
    cells = dict(re.findall(r'<td class="(?:num )?live-(\w+)"[^>]*>([^<]*)</td>', found.group(0)))
    assert set(cells) == {"rate", "p99", "errors", "drift", "accuracy"}, cells
    return cells


def window_of(html: str) -> str:
    found = re.search(r'data-window="([^"]*)"', html)
    assert found
    return found.group(1)


def test_the_models_page_shows_rate_p99_and_errors_of_real_requests(app: InProcess, keys: Keys) -> None:
    with sign_in(app, keys.admin) as console, app.client(keys.admin) as api:
        first = console.get("/ui/models")  # the first reading: the numbers since the server started
        assert first.status_code == 200
        assert window_of(first.text) == "since the server started"
        assert "Requests per second, p99 and errors since the server started." in first.text
        assert 'hx-trigger="every 5s"' in first.text and 'hx-include="#q"' in first.text
        for _ in range(6):
            assert api.post("/v2/models/credit/infer", json=INFER).status_code == 200
        for _ in range(2):
            assert api.post("/v2/models/credit/infer", json=BAD).status_code == 400
        for _ in range(3):
            assert api.post("/v2/models/fraud/infer", json=INFER).status_code == 200

        def refreshed() -> (
            str | None
        ):  # the 5-second refresh: the rows fragment, once a second reading exists
            html = console.get("/ui/models", headers={"HX-Request": "true"}).text
            return html if window_of(html).startswith("over the last") else None

        html = until(refreshed, timeout=15)
        assert html.startswith('<tbody id="model-rows"')
        credit, fraud = row_of(html, "credit"), row_of(html, "fraud")
        assert credit["errors"] == "25.0"  # 2 of the 8 requests sent since the first reading
        assert 'title="2 of 8 requests failed' in html
        assert fraud["errors"] == "0.0"
        seconds = float(re.search(r"over the last (\d+) s", html).group(1))  # type: ignore[union-attr]
        assert float(credit["rate"]) == pytest.approx(8 / max(seconds, 1), rel=0.5)
        assert float(credit["rate"]) > 0 and float(fraud["rate"]) > 0
        assert 0 < float(credit["p99"]) <= 10_000  # ms, within the histogram's finite buckets
        assert row_of(html, "scored")["rate"] == "0" and row_of(html, "scored")["p99"] == "—"
        filtered = console.get("/ui/models", params={"q": "fra"}, headers={"HX-Request": "true"}).text
        assert "/ui/models/fraud" in filtered and "/ui/models/credit" not in filtered


def test_models_outside_the_keys_scope_appear_in_no_column(app: InProcess, keys: Keys) -> None:
    with sign_in(app, keys.consumer) as console:  # credit* only
        for headers in ({}, {"HX-Request": "true"}):
            html = console.get("/ui/models", headers=headers).text
            row_of(html, "credit")
            assert "fraud" not in html and "scored" not in html


def test_drift_and_accuracy_come_from_the_real_monitors_latest_evaluation(
    app: InProcess, keys: Keys, keyed_home: Path
) -> None:
    with sign_in(app, keys.admin) as console:
        before = row_of(console.get("/ui/models").text, "credit")
        assert before["drift"] == "not monitored" and before["accuracy"] == "not monitored"
        with app.client(keys.admin) as api:
            for _ in range(12):
                assert api.post("/v2/models/credit/infer", json=INFER).status_code == 200
        home = keyed_home.resolve()
        # the prediction log reaches its files every prediction_log_flush_seconds
        until(
            lambda: (
                (found := logged(home, "credit", 0, time.time() + 1)) is not None and len(found["ts"]) >= 12
            )
        )
        registry = open_home(keyed_home)
        try:
            monitor = Monitor(home, registry, DriftSettings(min_rows=5), 0.0)
            samples = monitor.evaluate()
            monitor.publish(samples)
            reference = registry.store.monitoring.profiles("credit")[1]["accuracy"]
        finally:
            registry.close()
        with_rows = {s[1]["version"] for s in samples if s[0] == "modelport_drift_window_rows" and s[2] > 0}
        drifting = {
            s[1]["feature"]: s[2]
            for s in samples
            if s[0] == "modelport_feature_drifting" and s[1]["version"] in with_rows
        }
        assert with_rows and drifting  # the evaluation scored the features of the version that served
        flagged = sum(1 for value in drifting.values() if value >= 1)
        expected = f"{flagged} of {len(drifting)} features" if flagged else f"none of {len(drifting)}"
        after = row_of(console.get("/ui/models").text, "credit")
        assert after["drift"] == expected
        assert after["accuracy"] == f"no labels yet (ref {reference:.3f})"  # no feedback was sent
        assert row_of(console.get("/ui/models").text, "fraud")["drift"] == "not monitored"


def test_the_model_page_charts_the_metrics_and_lists_alias_moves(app: InProcess, keys: Keys) -> None:
    with sign_in(app, keys.admin) as console:
        page = console.get("/ui/models/scored")
        assert page.status_code == 200
        assert '<a href="/ui/models/scored/monitoring">Monitoring</a>' in page.text
        chart = re.search(r"<svg .*?</svg>", page.text, re.S)
        assert chart and "<title>Metrics of scored by version</title>" in chart.group(0)
        assert chart.group(0).count("<polyline") == 2  # accuracy and auc over v1, v2
        table = re.search(r'<table class="grid" id="metrics">.*?</table>', page.text, re.S)
        assert table
        heads = re.findall(r'<th scope="col" class="num">([^<]+)</th>', table.group(0))
        rows = re.findall(r'<th scope="row">v(\d+)</th>((?:<td class="num">[^<]*</td>)+)', table.group(0))
        shown = {int(n): [float(v) for v in re.findall(r">([^<]*)</td>", cells)] for n, cells in rows}
        assert heads == ["accuracy", "auc"]
        assert shown == {n: [m["accuracy"], m["auc"]] for n, m in enumerate(METRICS, 1)}

        token = csrf_of(page.text)
        started = time.time()
        for version in ("2", "1"):
            moved = console.post(
                "/ui/models/scored/aliases/production", data={"version": version, "csrf": token}
            )
            assert moved.status_code == 303, moved.text
        html = console.get("/ui/models/scored").text
        history = re.search(r'<table class="grid alias-history".*?</table>', html, re.S)
        assert history and "Latest moves of production, newest first" in history.group(0)
        moves = re.findall(
            r'<time datetime="([^"]+)">[^<]*</time></td>\s*<td>([^<]*)</td>\s*<td>([^<]*)</td>'
            r"\s*<td>([^<]*)</td>\s*<td>([^<]*)</td>",
            history.group(0),
        )
        actor = f"key:{Keys.id_of(keys.admin)}"
        assert [m[1:] for m in moves[:2]] == [(actor, "set", "v2", "v1"), (actor, "set", "v1", "v2")]
        assert moves[2][3:] == ("—", "v1")  # set at registration, from nothing
        from datetime import datetime

        for when, *_ in moves[:2]:
            assert started - 5 <= datetime.fromisoformat(when).timestamp() <= time.time() + 1
    with sign_in(app, keys.consumer) as console:  # credit* only: scored's page does not exist for it
        assert console.get("/ui/models/scored").status_code == 404


def test_the_versions_table_says_what_serves_and_what_was_validated(
    app: InProcess, keys: Keys, keyed_home: Path
) -> None:
    """Serving: live behind an alias, canary or shadow of a running release; Validation: the newest
    stored report's verdict (one query for the page), "not validated" without one."""
    registry = open_home(keyed_home)
    try:
        registry.store.validation.add_report(
            "credit", 1, passed=False, environment_hash="e" * 64, report={}, actor="local:test"
        )
        registry.store.validation.add_report(
            "credit", 1, passed=True, environment_hash="e" * 64, report={}, actor="local:test"
        )
        registry.store.validation.add_report(
            "credit", 2, passed=False, environment_hash="e" * 64, report={}, actor="local:test"
        )
    finally:
        registry.close()

    def cells(html: str) -> dict[int, tuple[str, str]]:
        rows = re.findall(
            r'<th scope="row"><a href="/ui/models/credit/versions/(\d+)">.*?</th>\s*<td>.*?</td>\s*'
            r"<td>.*?</td>\s*<td>.*?</td>\s*<td>([^<]*)</td>\s*<td>(.*?)</td>",
            html,
            re.S,
        )
        return {int(n): (serving, re.sub(r"<[^>]+>", "", verdict)) for n, serving, verdict in rows}

    with sign_in(app, keys.admin) as console, app.client(keys.admin) as api:
        before = cells(console.get("/ui/models/credit").text)
        assert before[1] == ("live", "passed")  # production; the newest of its two reports passed
        assert before[2] == ("live", "failed")  # staging
        started = api.put("/api/v1/models/credit/aliases/production/release", json={"shadow": 2})
        assert started.status_code == 200, started.text
        try:
            until(lambda: cells(console.get("/ui/models/credit").text)[2][0] == "live, shadow", timeout=10)
        finally:
            assert api.delete("/api/v1/models/credit/aliases/production/release").status_code == 200
        until(lambda: cells(console.get("/ui/models/credit").text)[2][0] == "live", timeout=10)


# -- the arithmetic, by hand ---------------------------------------------------------------------------


def test_quantile_interpolates_inside_the_bucket_as_prometheus_does() -> None:
    buckets = [(0.1, 50.0), (0.5, 90.0), (1.0, 100.0), (math.inf, 100.0)]
    assert live.quantile(0.99, buckets) == pytest.approx(0.95)  # rank 99: 0.5 + 0.5 × (99 − 90) / 10
    assert live.quantile(0.5, buckets) == pytest.approx(0.1)  # rank 50: the first bucket's top
    assert live.quantile(0.25, buckets) == pytest.approx(0.05)  # from 0 inside the first bucket
    assert live.quantile(0.99, [(0.1, 1.0), (math.inf, 100.0)]) == 0.1  # in +Inf: the highest bound
    assert live.quantile(0.99, [(0.1, 0.0), (math.inf, 0.0)]) is None
    assert live.quantile(0.99, []) is None


def test_rates_come_from_the_difference_of_two_snapshots() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    metrics.requests.labels("a", "1", "production", "rest", "ok").inc(8)
    metrics.requests.labels("a", "1", "production", "rest", "invalid").inc(2)
    metrics.requests.labels("", "", "", "rest", "not_found").inc(5)  # no registered model: left out
    for seconds in (0.002,) * 9 + (0.3,):
        metrics.latency.labels("a", "1", "rest").observe(seconds)
    old = live.snapshot(registry.collect(), 100.0)
    assert set(old.models) == {"a"}
    assert (old.models["a"].requests, old.models["a"].errors) == (10.0, 2.0)
    metrics.requests.labels("a", "2", "", "grpc", "ok").inc(15)
    metrics.requests.labels("a", "2", "", "grpc", "timeout").inc(5)
    for _ in range(20):
        metrics.latency.labels("a", "2", "grpc").observe(0.04)  # bucket (0.025, 0.05]
    new = live.snapshot(registry.collect(), 110.0)
    found = live.traffic(new.models["a"], old.models["a"], 10.0)
    assert (found.requests, found.errors) == (20.0, 5.0)
    assert found.rate == 2.0 and found.error_rate == 0.25
    assert found.p99 == pytest.approx(0.025 + 0.025 * (19.8 - 0) / 20)  # rank 19.8 of the 20 new ones
    restarted = live.traffic(old.models["a"], new.models["a"], 10.0)  # counts went down: a reset
    assert (restarted.requests, restarted.errors) == (10.0, 2.0)
    idle = live.traffic(None, None, 10.0)
    assert idle.rate == 0 and idle.error_rate is None and idle.p99 is None


def test_the_ring_keeps_a_window_and_says_what_it_covers() -> None:
    now = [1000.0]
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    numbers = live.LiveNumbers(window=60, every=2, source=registry.collect, clock=lambda: now[0])
    assert numbers.reading(["a"]).since_start
    numbers.sample()
    assert numbers.reading(["a"]).label == "since the server started"
    metrics.requests.labels("a", "1", "", "rest", "ok").inc(30)
    now[0] += 1
    assert not numbers.due()  # at most one reading every 2 s
    now[0] += 29
    numbers.sample()
    reading = numbers.reading(["a"])
    assert reading.label == "over the last 30 s" and reading.models["a"].rate == 1.0
    for _ in range(40):  # two minutes of readings: the base stays about a minute old
        now[0] += 3
        numbers.sample()
    reading = numbers.reading(["a", "b"])
    assert 60 <= reading.seconds < 63 and reading.models["a"].rate == 0
    assert reading.models["b"].requests == 0


def test_cells_say_what_is_known() -> None:
    off = live.cells(None, None, monitored=False)  # MODELPORT_METRICS=false: no counts, no monitor
    assert (off.rate, off.p99, off.errors, off.drift, off.accuracy) == ("—",) * 5
    busy = live.Traffic(requests=120, errors=3, seconds=60, p99=0.0123)
    health = live.health(
        [
            ["modelport_drift_psi_threshold", {"model": "a"}, 0.2],
            ["modelport_drift_window_rows", {"model": "a", "version": "1"}, 0],
            ["modelport_drift_window_rows", {"model": "a", "version": "2"}, 500],
            ["modelport_feature_drifting", {"model": "a", "version": "1", "feature": "x"}, 1.0],
            ["modelport_feature_drifting", {"model": "a", "version": "2", "feature": "x"}, 0.0],
            ["modelport_feature_drifting", {"model": "a", "version": "2", "feature": "y"}, 1.0],
            ["modelport_live_accuracy", {"model": "a", "version": "1"}, 0.5],
            ["modelport_live_labelled_rows", {"model": "a", "version": "1"}, 10],
            ["modelport_live_accuracy", {"model": "a", "version": "2"}, 0.9],
            ["modelport_live_labelled_rows", {"model": "a", "version": "2"}, 300],
            ["modelport_reference_accuracy", {"model": "a", "version": "2"}, 0.92],
        ]
    )
    shown = live.cells(busy, health["a"], monitored=True)
    assert (shown.rate, shown.p99, shown.errors) == ("2.00", "12.3", "2.5")
    assert shown.drift == "1 of 2 features"  # v1 had no rows in the window: its drift does not count
    assert shown.accuracy == "0.900 (ref 0.920)"  # the version with the most labelled rows
    assert live.cells(busy, None, monitored=True).drift == "not monitored"


@pytest.mark.slow
def test_with_several_workers_the_page_sums_every_workers_requests(
    tmp_path: Path, keyed_home: Path, keys: Keys
) -> None:
    """``--workers 2``: prometheus-client's multi-process files, merged (metrics.py
    ``request_families``), whichever worker answers the page and whichever answered the requests."""
    import shutil

    home = tmp_path / "home"
    shutil.copytree(keyed_home, home, ignore=shutil.ignore_patterns("run"))
    server = start_server(home, "--workers", "2", insecure_dev=False)
    try:
        with sign_in(server, keys.admin) as console:  # type: ignore[arg-type]
            assert window_of(console.get("/ui/models").text) == "since the server started"
            for _ in range(3):
                for body, status in ((INFER, 200), (INFER, 200), (INFER, 200), (BAD, 400)):
                    # a connection each: the kernel spreads them over the workers
                    with httpx.Client(base_url=server.url, timeout=30, headers=bearer(keys.admin)) as one:
                        assert one.post("/v2/models/credit/infer", json=body).status_code == status

            def summed() -> dict[str, str] | None:  # every worker flushes its counts within 0.25 s
                html = console.get("/ui/models", headers={"HX-Request": "true"}).text
                cells = row_of(html, "credit")
                return cells if 'title="3 of 12 requests failed' in html else None

            cells = until(summed, timeout=20)
            assert cells["errors"] == "25.0" and float(cells["rate"]) > 0 and cells["p99"] != "—"
    finally:
        stop_server(server)
