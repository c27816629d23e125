"""What a client can make others see (issue 19): /metrics within a key's scope, an audit view no path can
break or forge, CSV exports no spreadsheet runs as formulas, a fixed answer when an audit record cannot
be written, and a home only its owner can read."""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import sqlite3
import stat
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd

from modelport.app import open_registry
from modelport.monitoring.metrics import scoped
from modelport.monitoring.predictions import LogPolicy, PredictionLog
from modelport.registry.audit import NOT_WRITTEN
from modelport.runtimes.base import Prediction
from modelport.security.store import KeyStore
from modelport.settings import Settings
from modelport.tables import escape_controls, spreadsheet_frame, spreadsheet_safe, write_csv
from tests.conftest import run_cli
from tests.security.conftest import INFER, Keys, bearer, make_key
from tests.serving.conftest import serve_in_process

HOSTILE_PATHS = [
    "/api/v1/models/x%5B/aliases/%5Dy",  # rich markup: `[/aliases/]` broke `modelport audit`
    "/api/v1/models/a%1B%5B1A%1B%5B2K/aliases/b",  # cursor up, erase line
    "/api/v1/models/%1B%5D0%3Btitle%07/aliases/p",  # set the window title
]


def _call(home: Path, requests: list[tuple[str, str, str, Any]]) -> list[httpx.Response]:
    """(method, path, token, JSON body) requests, in order, to the keyed app on ``home`` (in-process)."""
    with serve_in_process(home, insecure_dev=False) as app, app.client() as client:
        return [
            client.request(method, path, json=body, headers=bearer(token))
            for method, path, token, body in requests
        ]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- /metrics -----------------------------------------------------------------------------------------


def test_scoped_keeps_help_type_and_server_wide_series_only_for_seen_models() -> None:
    body = (
        b"# HELP modelport_requests_total Requests answered.\n"
        b"# TYPE modelport_requests_total counter\n"
        b'modelport_requests_total{model="risk-a",version="1",alias="",protocol="v2",outcome="ok"} 3.0\n'
        b'modelport_requests_total{model="other",version="1",alias="",protocol="v2",outcome="ok"} 2.0\n'
        b'modelport_requests_total{model="",version="",alias="",protocol="v2",outcome="not_found"} 1.0\n'
        b"modelport_loaded_models 2.0\n"
        b'modelport_feature_drift_psi{model="other",version="1",feature="income"} 0.1\n'
        b'modelport_feature_drift_psi{model="risk-a",version="1",feature="x,model=\\"other\\""} 0.2\n'
        b'modelport_live_class_recall{version="1",class="c0",model="ot\\"her"} 0.9\n'
        b'broken{model="other 1\n'
    )
    shown = scoped(body, lambda model: model.startswith("risk")).decode()
    assert "# HELP modelport_requests_total" in shown and "# TYPE modelport_requests_total" in shown
    assert 'model="risk-a",version="1",alias=""' in shown
    assert "modelport_loaded_models 2.0" in shown  # server-wide: no model label
    assert 'feature="x,model=\\"other\\""' in shown  # a feature of risk-a, whatever its name says
    assert 'model="other"' not in shown.replace('model=\\"other\\"', "")
    assert 'ot\\"her' not in shown and "broken" not in shown and 'model=""' not in shown
    readable = body.replace(b'broken{model="other 1\n', b"")
    assert scoped(readable, lambda model: True) == readable


def test_metrics_for_a_scoped_key_shows_only_its_models(keyed_home: Path, keys: Keys) -> None:
    infer = "/v2/models/{}/infer"
    responses = _call(
        keyed_home,
        [
            ("POST", infer.format("fraud"), keys.other, INFER),
            ("POST", infer.format("credit"), keys.consumer, INFER),
            ("GET", "/metrics", keys.consumer, None),
            ("GET", "/metrics", keys.admin, None),
            ("GET", "/metrics", keys.other, None),
        ],
    )
    assert [r.status_code for r in responses] == [200] * 5
    consumer, admin, other = (r.text for r in responses[2:])
    assert 'model="credit"' in consumer and "fraud" not in consumer
    assert "# HELP modelport_requests_total" in consumer and "modelport_loaded_models" in consumer
    assert 'model="fraud"' in other and 'model="credit"' not in other
    assert 'model="fraud"' in admin and 'model="credit"' in admin


# -- the audit view -----------------------------------------------------------------------------------


def test_hostile_paths_neither_break_nor_drive_the_audit_view(keyed_home: Path, keys: Keys) -> None:
    denied = _call(keyed_home, [("PUT", path, keys.consumer, {"version": 1}) for path in HOSTILE_PATHS])
    assert [r.status_code for r in denied] == [403] * len(HOSTILE_PATHS)
    registry = open_registry(Settings(home=keyed_home))
    try:
        targets = [r.target for r in registry.store.audit_records(action="denied")]
    finally:
        registry.close()
    assert "PUT /api/v1/models/a\x1b[1A\x1b[2K/aliases/b" in targets  # recorded as sent

    shown = run_cli(keyed_home, "audit", "--action", "denied", env={"COLUMNS": "100"})
    assert shown.returncode == 0, shown.stderr
    assert "\x1b" not in shown.stdout + shown.stderr and "\x07" not in shown.stdout + shown.stderr
    # the target column, its folded lines joined: cells are the text between the table's borders
    text = "".join(line.split("│")[5].strip() for line in shown.stdout.splitlines() if line.count("│") == 8)
    assert "x[/aliases/]y" in text
    assert "\\x1b[1A\\x1b[2K" in text and "\\x1b]0;title\\x07" in text

    as_json = run_cli(keyed_home, "audit", "--action", "denied", "--json")
    assert as_json.returncode == 0 and "\x1b" not in as_json.stdout
    assert "PUT /api/v1/models/\x1b]0;title\x07/aliases/p" in {
        r["target"] for r in json.loads(as_json.stdout)
    }


def test_control_characters_are_shown_as_escapes() -> None:
    assert escape_controls("a\x1b[2K\x07\x9b\u202eb\n\t") == "a\\x1b[2K\\x07\\x9b\\u202eb\\n\\t"
    assert escape_controls("two\nlines\tok\r", keep_lines=True) == "two\nlines\tok\\r"


# -- CSV exports --------------------------------------------------------------------------------------


def test_spreadsheet_safe_cells() -> None:
    for formula in ("=1+2", "+cmd", "-2+3", "@SUM(A1)", "\t=1", "-"):
        assert spreadsheet_safe(formula).startswith("'")
    for kept in ("-0.5", "+1", "-1e-3", "credit", "a=b", 3, -0.5, None):
        assert spreadsheet_safe(kept) == kept
    assert spreadsheet_safe("\r=1") == "\\r=1"  # escaped: neither a formula nor a carriage return
    out = io.StringIO()
    write_csv(out, ["=h"], [["=x"], [-1]])
    assert list(csv.reader(io.StringIO(out.getvalue()))) == [["'=h"], ["'=x"], ["-1"]]
    frame = pd.DataFrame({"label": ["=evil", "ok"], "-score": [-0.5, 0.25]})
    written = spreadsheet_frame(frame).to_csv(index=False)
    assert written.splitlines() == ["label,'-score", "'=evil,-0.5", "ok,0.25"]
    assert list(frame["label"]) == ["=evil", "ok"]  # the caller's frame is untouched


def test_logged_request_ids_cannot_become_formulas(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert run_cli(home, "init", "--json").returncode == 0
    log = PredictionLog(home.resolve())
    for request_id in ("=1+2", "+cmd", "-2+3", "@x", "plain"):
        prediction = Prediction(labels=np.array(["=evil"], dtype=object), probabilities=np.ones((1, 2)))
        log.offer(
            LogPolicy(1.0),
            "m",
            1,
            {"x": np.array([-0.5])},
            prediction,
            request_id=request_id,
            key_id="k",
            latency_ms=0.1,
            flags={},
        )
    assert log.write(log.take()) == 5
    done = run_cli(home, "predictions", "m", "--all-versions", "--csv")
    assert done.returncode == 0, done.stderr
    header, *rows = list(csv.reader(io.StringIO(done.stdout)))
    cells = [dict(zip(header, row, strict=True)) for row in rows]
    assert {c["request_id"] for c in cells} == {"'=1+2", "'+cmd", "'-2+3", "'@x", "plain"}
    assert {c["label"] for c in cells} == {"'=evil"}
    assert all(not c.startswith(("=", "+", "-", "@")) for row in rows for c in row)

    # the file modes of what the serving writer wrote (segments, their folders, the pseudonym key)
    segments = list((home / "predictions").rglob("*.parquet"))
    assert segments and all(_mode(s) == 0o600 for s in segments)
    assert all(_mode(folder) == 0o700 for folder in (home / "predictions").rglob("*") if folder.is_dir())
    assert _mode(home / "predictions") == 0o700


# -- a change whose audit record cannot be written ------------------------------------------------------


def test_an_unwritable_audit_record_answers_a_fixed_message(tmp_path: Path) -> None:
    home = tmp_path / "home"
    open_registry(Settings(home=home), create=True).close()
    admin = make_key(home, "admin")
    with sqlite3.connect(home / "registry.db") as conn:
        conn.execute(
            "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_log "
            "BEGIN SELECT RAISE(ABORT, 'secret-internal-detail'); END"
        )
    seen: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())  # type: ignore[method-assign]
    operator_log = logging.getLogger("modelport.registry")
    operator_log.addHandler(handler)
    try:
        (response,) = _call(home, [("POST", "/api/v1/keys", admin, {"name": "new", "role": "consumer"})])
    finally:
        operator_log.removeHandler(handler)
    assert response.status_code >= 500
    assert response.json() == {"error": NOT_WRITTEN}
    for secret in ("secret-internal-detail", "audit_log", "INSERT", "sqlite"):
        assert secret not in response.text
    assert any("secret-internal-detail" in message for message in seen)  # the operator's log has it
    registry = open_registry(Settings(home=home))
    try:
        assert [key.name for key in KeyStore(registry.store).list_keys()] == ["test admin"]  # not applied
    finally:
        registry.close()


# -- file modes ---------------------------------------------------------------------------------------


def test_init_makes_the_home_and_the_database_private(tmp_path: Path) -> None:
    home = tmp_path / "home"
    done = run_cli(home, "init", "--json")
    assert done.returncode == 0, done.stderr
    assert _mode(home) == 0o700
    database = home / "registry.db"
    for path in (database, database.with_name("registry.db-wal"), database.with_name("registry.db-shm")):
        if path.exists():
            assert _mode(path) == 0o600, path

    # a home and registry made before (0755/0644) lose other users' access on the next init
    home.chmod(0o755)
    database.chmod(0o644)
    assert run_cli(home, "init", "--json").returncode == 0
    assert _mode(home) == 0o750 and _mode(database) == 0o640


def test_registration_leaves_only_owner_only_files(
    tmp_path: Path, sklearn_model: object, data: pd.DataFrame
) -> None:
    """Issue 14: under the usual umask (022) `registry.db` was created world-readable, and the artifact
    store still is: 0755 folders and 0444 blobs, readable by anyone once it lives outside the home
    (MODELPORT_ARTIFACT_URL). Everything init and a registration create is the owner's alone."""
    home, store = tmp_path / "home", tmp_path / "shared" / "models" / "artifacts"
    settings = Settings(home=home, artifact_url=store.as_uri(), equivalence_rows=300)
    previous = os.umask(0o022)
    try:
        done = run_cli(home, "init", "--json", env={"MODELPORT_ARTIFACT_URL": store.as_uri()})
        assert done.returncode == 0, done.stderr
        database = home / "registry.db"
        reader = sqlite3.connect(database)  # keeps the WAL files after the registry's connections close
        registry = open_registry(settings)
        try:
            reader.execute("SELECT count(*) FROM models").fetchall()
            registry.register(sklearn_model, name="credit", sample=data, target="label", alias="production")
            journal = [database.with_name("registry.db-wal"), database.with_name("registry.db-shm")]
            assert all(path.exists() and _mode(path) == 0o600 for path in journal)
        finally:
            registry.close()
            reader.close()
    finally:
        os.umask(previous)
    assert _mode(home) == 0o700 and _mode(database) == 0o600
    assert _mode(tmp_path / "shared") == _mode(tmp_path / "shared" / "models") == 0o700
    blobs = [path for path in store.rglob("*") if path.is_file() and path.parent.parent.name == "sha256"]
    assert len(blobs) == 2 and all(_mode(blob) == 0o400 for blob in blobs)  # the skops and ONNX files
    for path in [store, *store.rglob("*"), *home.rglob("*")]:  # folders, journal, lock, database
        expected = {0o700} if path.is_dir() else {0o600, 0o400}
        assert _mode(path) in expected, (path, oct(_mode(path)))
