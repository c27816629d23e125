"""The monitor: drift and live accuracy of logged predictions, as reports and as Prometheus gauges.

Reports (:func:`drift_report`, :func:`accuracy_report`) read the prediction log's Parquet segments of one
model over time windows, compare each version's logged inputs and predictions with its reference profile
(monitoring/drift.py) and join ground-truth feedback by request id and row (monitoring/live.py).
``modelport drift`` prints them.

For Prometheus, every worker's poller calls :meth:`Monitor.tick`; once per ``monitor_interval`` one
worker (whichever takes ``HOME/run/monitor.lock`` first) has the latest window of every logged model
evaluated and the gauges written to ``HOME/run/monitor.json`` (atomically). ``/metrics`` appends them
(:meth:`Monitor.exposition`) whichever worker answers, so the numbers are the same in every scrape and
computed once, not once per worker.

In a server the evaluation runs in a child process (``python -m modelport.monitoring.monitor``, at a
lower CPU priority): it reads every logged row of the window — seconds of CPU for millions of rows —
with pyarrow, which the serving process never loads; it runs without pandas and with the system
allocator for Arrow's buffers, so it stays small (peak RSS 161 MiB instead of 244 MiB on the
benchmark's home), and only while some model logs predictions.
The worker only waits for it in a thread. The child gets the database URL on standard input, never on
its command line (it may hold a password).

Reports asked of a server (``GET /api/v1/models/{name}/drift``, the console's monitoring page, live
accuracy on a release's status) go to a second, long-lived child (:class:`_Reporter`): one JSON line
per request each way, so a report costs its computation, not a new Python process with pyarrow
(~0.8 s). It exits after ``REPORTER_IDLE_SECONDS`` without a request and when its worker stops.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import select
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from modelport.errors import InvalidInput, ModelportError
from modelport.monitoring.drift import compare
from modelport.monitoring.live import scores
from modelport.monitoring.metrics import MONITOR_GAUGES

if TYPE_CHECKING:
    from modelport.registry.service import Registry

__all__ = ["DriftSettings", "Monitor", "accuracy_report", "drift_report", "logged"]


@dataclass(frozen=True, slots=True)
class DriftSettings:
    threshold: float = 0.2
    min_rows: int = 100
    window_seconds: float = 3600.0
    accuracy_window_seconds: float = 7 * 86400.0


def logged(
    home: Path, model: str, since: float, until: float, *, inputs: bool = True
) -> dict[str, np.ndarray] | None:
    """Every logged row of ``model`` with ``since <= time < until`` (Unix seconds), as numpy columns
    (``ts`` in seconds, ``version``, ``request_id``, ``row``, ``label`` / ``prediction``,
    ``probabilities`` (rows × classes) and, with ``inputs``, ``in.<feature>``), or None when nothing
    was logged. Segments written before ``since`` are skipped unread (a segment only holds requests
    answered before it was written: its name carries the time of writing)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from modelport.monitoring.predictions import compact

    compact(home, model)  # what the serving processes spooled since the last reader
    root = home / "predictions" / f"model={model}"
    first_day = datetime.fromtimestamp(since, UTC).date().isoformat() if since > 0 else ""
    tables = []
    for folder in sorted(root.glob("date=*")):
        if folder.name.removeprefix("date=") < first_day:
            continue
        for segment in sorted(folder.glob("*.parquet")):
            written = _written(segment.name)
            if written is not None and written < since:
                continue
            # ParquetFile, not read_table: read_table goes through pyarrow.dataset, which imports
            # pandas (~80 MB and half a second in the evaluation child)
            parquet = pq.ParquetFile(segment)
            if inputs:
                table = parquet.read()
            else:
                names = parquet.schema_arrow.names
                table = parquet.read(columns=[n for n in names if not n.startswith("in.")])
            # constants as Arrow scalars: the evaluation child runs without pandas (see _child)
            seconds = pc.divide(table["ts"].cast(pa.int64()), pa.scalar(1_000_000.0))
            keep = pc.and_(
                pc.greater_equal(seconds, pa.scalar(float(since))), pc.less(seconds, pa.scalar(float(until)))
            )
            table = table.filter(keep)
            if table.num_rows:
                tables.append(table)
    if not tables:
        return None
    table = pa.concat_tables(tables, promote_options="default")
    columns: dict[str, np.ndarray] = {
        "ts": table["ts"].cast(pa.int64()).to_numpy() / 1e6,
        "version": table["version"].to_numpy(),
        "request_id": np.asarray(table["request_id"].to_pylist(), dtype=object),
        "row": table["row"].to_numpy(),
    }
    for name in table.column_names:
        if name.startswith("in.") or name in ("label", "prediction"):
            column = table[name]
            if pa.types.is_floating(column.type):
                columns[name] = column.to_numpy(zero_copy_only=False)
            else:
                columns[name] = np.asarray(column.to_pylist(), dtype=object)
    if "probabilities" in table.column_names:
        probabilities = table["probabilities"].combine_chunks()
        width = probabilities.type.list_size
        flat = probabilities.flatten().to_numpy(zero_copy_only=False)
        columns["probabilities"] = flat.reshape(-1, width)
    return columns


def _written(name: str) -> float | None:
    """The time a segment was written, from its name ``part-PID-NANOS-vVERSION.parquet``."""
    parts = name.split("-")
    if len(parts) >= 3 and parts[2].isdigit():
        return int(parts[2]) / 1e9
    return None


def _subset(columns: dict[str, np.ndarray], keep: np.ndarray) -> dict[str, np.ndarray]:
    return {name: values[keep] for name, values in columns.items()}


def _truth(columns: dict[str, np.ndarray], labels: dict[tuple[str, int], str]) -> np.ndarray:
    """The ground-truth label of each logged row (None where none arrived)."""
    return np.asarray(
        [labels.get((rid, int(row))) for rid, row in zip(columns["request_id"], columns["row"], strict=True)],
        dtype=object,
    )


def _scored(
    columns: dict[str, np.ndarray], keep: np.ndarray, truth: np.ndarray, classes: list[Any]
) -> dict[str, Any]:
    probabilities = columns.get("probabilities")
    return scores(
        [str(t) for t in truth[keep].tolist()],
        None if "label" not in columns else [str(v) for v in columns["label"][keep].tolist()],
        None if probabilities is None else probabilities[keep],
        classes,
        values=columns["prediction"][keep] if "prediction" in columns else None,
    )


def drift_report(
    home: Path,
    registry: Registry,
    model: str,
    *,
    version: int | None = None,
    windows: int = 1,
    settings: DriftSettings = DriftSettings(),
    now: float | None = None,
) -> dict[str, Any]:
    """Drift of ``model``'s logged traffic against each version's reference, over ``windows``
    consecutive windows of ``settings.window_seconds`` ending now (oldest first)."""
    if not 1 <= windows <= 1000:
        raise InvalidInput("the number of windows is 1 to 1000")
    now = time.time() if now is None else now
    width = settings.window_seconds
    start = now - windows * width
    profiles = registry.store.monitoring.profiles(model)  # also: ModelNotFound for an unknown model
    policy = registry.store.monitoring.log_policies().get(model, {})
    pseudonymised = tuple(policy.get("pseudonymise", ()))
    columns = logged(home, model, start, now)
    versions = sorted(set(columns["version"].tolist())) if columns is not None else []
    if version is not None:
        versions = [version]
    labels = registry.store.monitoring.feedback_labels(model) if columns is not None else {}
    truth = _truth(columns, labels) if columns is not None and labels else None
    report: dict[str, Any] = {
        "model": model,
        "threshold": settings.threshold,
        "min_rows": settings.min_rows,
        "window_seconds": width,
        "until": datetime.fromtimestamp(now, UTC).isoformat(),
        "logging": bool(policy.get("sample_rate")),
        "versions": [],
    }
    for number in versions:
        entry: dict[str, Any] = {"version": number, "profile": number in profiles, "windows": []}
        if number in profiles and columns is not None:
            classes = list(registry.get(f"{model}@{number}").signature["outputs"]["classes"])
            for index in range(windows):
                lower, upper = start + index * width, start + (index + 1) * width
                keep = (columns["version"] == number) & (columns["ts"] >= lower) & (columns["ts"] < upper)
                part = _subset(columns, keep)
                features, prediction = compare(
                    profiles[number],
                    {k[3:]: v for k, v in part.items() if k.startswith("in.")},
                    part.get("label", part.get("prediction")),
                    threshold=settings.threshold,
                    min_rows=settings.min_rows,
                    pseudonymised=pseudonymised,
                )
                entry["windows"].append(
                    {
                        "start": datetime.fromtimestamp(lower, UTC).isoformat(),
                        "end": datetime.fromtimestamp(upper, UTC).isoformat(),
                        "rows": int(keep.sum()),
                        "features": [f.to_dict() for f in features],
                        "prediction": prediction.to_dict(),
                        "drifting": [f.feature for f in features if f.drifting],
                        # labelled predictions made in this window (the labels may come much later)
                        "accuracy": None
                        if truth is None or not (labelled := keep & (truth != None)).any()  # noqa: E711
                        else _scored(columns, labelled, truth, classes),
                    }
                )
        report["versions"].append(entry)
    return report


def accuracy_report(
    home: Path,
    registry: Registry,
    model: str,
    *,
    settings: DriftSettings = DriftSettings(),
    now: float | None = None,
) -> dict[str, Any]:
    """Scores of ``model``'s logged predictions that have ground truth, per version, over the accuracy
    window (by the time of the prediction), each with its ``label_lag``: how long those labels took to
    come after the predictions (:func:`_label_lag`)."""
    now = time.time() if now is None else now
    labels = registry.store.monitoring.feedback_labels(model)
    profiles = registry.store.monitoring.profiles(model)
    report: dict[str, Any] = {
        "model": model,
        "window_seconds": settings.accuracy_window_seconds,
        "labels_received": len(labels),
        "versions": [],
    }
    since = now - settings.accuracy_window_seconds
    columns = logged(home, model, since, now, inputs=False) if labels else None
    if columns is None:
        return report
    truth = _truth(columns, labels)
    labelled = truth != None  # noqa: E711 - elementwise
    received = registry.store.monitoring.feedback_received(model)
    for number in sorted(set(columns["version"][labelled].tolist())):
        keep = labelled & (columns["version"] == number)
        classes = list(registry.get(f"{model}@{number}").signature["outputs"]["classes"])
        result = _scored(columns, keep, truth, classes)
        reference = profiles.get(number, {})
        result.update(
            version=number,
            reference_accuracy=reference.get("accuracy"),
            reference_log_loss=reference.get("log_loss"),
            label_lag=_label_lag(columns, keep, received),
        )
        report["versions"].append(result)
    return report


def _label_lag(
    columns: dict[str, np.ndarray], keep: np.ndarray, received: dict[tuple[str, int], datetime]
) -> dict[str, Any] | None:
    """How long the labels of the rows ``keep`` selects took to come: seconds from the time each
    prediction was logged to its label's ``received_at`` (median and 90th percentile), and when the
    latest of them arrived. None when none of them has an arrival time (a label stored between the two
    reads of the feedback table)."""
    times = [
        received.get((rid, int(row)))
        for rid, row in zip(columns["request_id"][keep], columns["row"][keep], strict=True)
    ]
    known = np.asarray([t is not None for t in times], dtype=bool)
    if not known.any():
        return None
    arrived = np.asarray([t.timestamp() for t in times if t is not None], dtype=np.float64)
    lag = arrived - columns["ts"][keep][known]
    median, p90 = np.percentile(lag, [50, 90])
    return {
        "rows": len(arrived),
        "median_seconds": float(median),
        "p90_seconds": float(p90),
        "latest_label_at": datetime.fromtimestamp(float(arrived.max()), UTC).isoformat(),
    }


class Monitor:
    """Evaluates drift and accuracy for Prometheus, in one worker at a time (see the module text)."""

    def __init__(
        self,
        home: Path,
        registry: Registry,
        settings: DriftSettings,
        interval: float,
        *,
        database_url: str | None = None,
    ) -> None:
        self.home = home
        self.registry = registry
        self.settings = settings
        self.interval = interval
        self.database_url = database_url  # given: evaluate in a child process (see the module text)
        self.state = home / "run" / "monitor.json"
        self._next = 0.0
        self._cache: tuple[float, bytes] = (-1.0, b"")
        self._samples_cache: tuple[float, list[list[Any]]] = (-1.0, [])
        self._reports = _Reporter(timeout=max(600.0, 10 * interval))

    def due(self, now: float) -> bool:
        return self.interval > 0 and now >= self._next

    def tick(self) -> bool:
        """Evaluate if no other worker is doing so and the last result is older than the interval.
        Returns whether this call evaluated. Runs in a thread (it reads Parquet and the database)."""
        self._next = time.monotonic() + self.interval
        self.state.parent.mkdir(parents=True, exist_ok=True)
        with open(self.home / "run" / "monitor.lock", "a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            try:
                if time.time() - self.state.stat().st_mtime < self.interval * 0.9:
                    return False  # another worker has just done it
            except FileNotFoundError:
                pass
            if self.database_url is None:
                self.publish(self.evaluate())
            else:
                self._evaluate_in_child()
            return True

    def publish(self, samples: list[list[Any]]) -> None:
        temporary = self.state.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_text(json.dumps({"ts": time.time(), "samples": samples}))
        os.replace(temporary, self.state)

    def report(
        self,
        model: str,
        *,
        version: int | None = None,
        windows: int = 1,
        accuracy_only: bool = False,
        now: float | None = None,
    ) -> dict[str, Any]:
        """:func:`drift_report` with the :func:`accuracy_report` under ``accuracy`` (or, with
        ``accuracy_only``, just the latter), over windows ending at ``now`` (Unix time; default: now) —
        in the child process when there is one (a client asking must not load pandas into a serving
        worker)."""
        if self.database_url is None:
            if accuracy_only:
                return accuracy_report(self.home, self.registry, model, settings=self.settings, now=now)
            return _both(self.home, self.registry, model, version, windows, self.settings, now)
        asked = {
            "model": model,
            "version": version,
            "windows": windows,
            "accuracy_only": accuracy_only,
            "now": now,
        }
        answer = self._reports.ask(asked, self._config({"serve": REPORTER_IDLE_SECONDS}))
        if "error" in answer:
            raise _client_error(answer["error"], answer.get("message", ""))
        return answer

    def close(self) -> None:
        """Stop the report child (the worker is stopping)."""
        self._reports.close()

    def _evaluate_in_child(self) -> None:
        self._run_child({})

    def _config(self, extra: dict[str, Any]) -> dict[str, Any]:
        return {
            **extra,
            "home": str(self.home),
            "database_url": self.database_url,
            "threshold": self.settings.threshold,
            "min_rows": self.settings.min_rows,
            "window_seconds": self.settings.window_seconds,
            "accuracy_window_seconds": self.settings.accuracy_window_seconds,
        }

    def _run_child(self, extra: dict[str, Any]) -> subprocess.CompletedProcess[bytes]:
        done = subprocess.run(
            _CHILD,
            env=_child_env(),
            input=json.dumps(self._config(extra)).encode(),
            capture_output=True,
            timeout=max(600.0, 10 * self.interval),
            check=False,
        )
        if done.returncode != 0:
            # the child's last line names the failure (a type, no paths, no URL)
            reason = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
            raise RuntimeError(f"the monitor process failed: {reason[0][:200]}")
        return done

    def evaluate(self, now: float | None = None) -> list[list[Any]]:
        """Gauge samples ``[name, labels, value]`` for every model that logs predictions."""
        now = time.time() if now is None else now
        samples: list[list[Any]] = [["modelport_monitor_last_run_timestamp_seconds", {}, now]]
        for model, policy in sorted(self.registry.store.monitoring.log_policies().items()):
            if not policy.get("sample_rate"):
                continue
            samples.append(["modelport_drift_psi_threshold", {"model": model}, self.settings.threshold])
            drift = drift_report(self.home, self.registry, model, settings=self.settings, now=now)
            for entry in drift["versions"]:
                labels = {"model": model, "version": str(entry["version"])}
                if not entry["windows"]:
                    continue
                window = entry["windows"][-1]
                samples.append(["modelport_drift_window_rows", labels, window["rows"]])
                for feature in window["features"]:
                    if feature["psi"] is None:
                        continue
                    named = {**labels, "feature": feature["feature"]}
                    samples.append(["modelport_feature_drift_psi", named, feature["psi"]])
                    samples.append(["modelport_feature_drifting", named, 1.0 if feature["drifting"] else 0.0])
                    if feature["ks"] is not None:
                        samples.append(["modelport_feature_drift_ks", named, feature["ks"]])
                if window["prediction"]["psi"] is not None:
                    samples.append(["modelport_prediction_drift_psi", labels, window["prediction"]["psi"]])
            for version, profile in self.registry.store.monitoring.profiles(model).items():
                if profile.get("accuracy") is not None:
                    labels = {"model": model, "version": str(version)}
                    samples.append(["modelport_reference_accuracy", labels, profile["accuracy"]])
            accuracy = accuracy_report(self.home, self.registry, model, settings=self.settings, now=now)
            for result in accuracy["versions"]:
                labels = {"model": model, "version": str(result["version"])}
                samples.append(["modelport_live_labelled_rows", labels, result["rows"]])
                if "accuracy" in result:
                    samples.append(["modelport_live_accuracy", labels, result["accuracy"]])
                if "log_loss" in result:
                    samples.append(["modelport_live_log_loss", labels, result["log_loss"]])
                for cls, per in result.get("classes", {}).items():
                    if per["recall"] is not None:
                        samples.append(
                            ["modelport_live_class_recall", {**labels, "class": cls}, per["recall"]]
                        )
        return samples

    def exposition(self) -> bytes:
        """The latest evaluation in Prometheus' text format (empty before the first one)."""
        try:
            mtime = self.state.stat().st_mtime
        except FileNotFoundError:
            return b""
        if mtime == self._cache[0]:
            return self._cache[1]
        try:
            samples = json.loads(self.state.read_text())["samples"]
        except (OSError, ValueError, KeyError):
            return self._cache[1]
        self._cache = (mtime, _format(samples))
        return self._cache[1]

    def latest_samples(self) -> list[list[Any]]:
        """The latest evaluation's samples ``[name, labels, value]`` (empty before the first one), for
        the console's drift and accuracy columns: the state file is read again only when it changed
        (by mtime, as :meth:`exposition`), so a page costs one ``stat``."""
        try:
            mtime = self.state.stat().st_mtime
        except FileNotFoundError:
            return []
        if self._samples_cache[0] == mtime:
            return self._samples_cache[1]
        try:
            samples = list(json.loads(self.state.read_text())["samples"])
        except (OSError, ValueError, KeyError, TypeError):
            return self._samples_cache[1]
        self._samples_cache = (mtime, samples)
        return samples


REPORTER_IDLE_SECONDS = 300.0  # a report child nobody asked for this long exits (its memory back)
_CHILD = [sys.executable, "-m", "modelport.monitoring.monitor"]


def _child_env() -> dict[str, str]:
    # Arrow's own allocator keeps freed memory for reuse: ~80 MB more at the child's peak
    return {**os.environ, "ARROW_DEFAULT_MEMORY_POOL": "system"}


class _Reporter:
    """A long-lived child process answering report requests, one JSON line each way.

    Starting a Python process with pyarrow and the registry costs ~0.8 s — every report asked for (the
    console's monitoring page, ``GET …/drift``) paid it when each had its own child. This one child
    stays up while it is asked, one request at a time per worker (a lock), and exits by itself after
    ``REPORTER_IDLE_SECONDS`` without a request or when the worker's end of its pipe closes (the worker
    stopped), so no child outlives its worker. A child that died or exited idle is started again at
    the next request; one that does not answer within ``timeout`` is killed."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None

    def ask(self, request: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            for attempt in (1, 2):  # a child that exited idle just as it was asked: start another
                process = self._running(config)
                try:
                    assert process.stdin is not None and process.stdout is not None
                    process.stdin.write(json.dumps(request).encode() + b"\n")
                    process.stdin.flush()
                    ready, _, _ = select.select([process.stdout], [], [], self.timeout)
                    if not ready:
                        self._stop()
                        raise RuntimeError("the monitor process did not answer in time")
                    line = process.stdout.readline()
                except (BrokenPipeError, OSError):
                    line = b""
                if line:
                    answer: dict[str, Any] = json.loads(line)
                    return answer
                self._stop()
                if attempt == 2:
                    raise RuntimeError("the monitor process failed: it exited without an answer")
        raise AssertionError("unreachable")

    def _running(self, config: dict[str, Any]) -> subprocess.Popen[bytes]:
        if self._process is not None and self._process.poll() is None:
            return self._process
        self._stop()  # one that died or exited idle: its pipes closed
        process = subprocess.Popen(
            _CHILD, env=_child_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
        )
        assert process.stdin is not None
        process.stdin.write(json.dumps(config).encode() + b"\n")  # the URL on a pipe, never argv
        process.stdin.flush()
        self._process = process
        return process

    def close(self) -> None:
        """End the child: its standard input closes, so it exits when its current request is done."""
        with self._lock:
            process, self._process = self._process, None
        if process is None:
            return
        if process.stdin is not None:
            with contextlib.suppress(OSError):
                process.stdin.close()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()

    def _stop(self) -> None:
        if self._process is not None:
            with contextlib.suppress(OSError):
                self._process.kill()
            self._process.wait()
            for pipe in (self._process.stdin, self._process.stdout):
                if pipe is not None:
                    with contextlib.suppress(OSError):
                        pipe.close()
            self._process = None


def _both(
    home: Path,
    registry: Registry,
    model: str,
    version: int | None,
    windows: int,
    settings: DriftSettings,
    now: float | None = None,
) -> dict[str, Any]:
    drift = drift_report(home, registry, model, version=version, windows=windows, settings=settings, now=now)
    drift["accuracy"] = accuracy_report(home, registry, model, settings=settings, now=now)
    return drift


def _client_error(kind: str, message: str) -> Exception:
    """The child's refusal (an unknown model, a bad window) as the same error class, for the same
    answer as in-process; anything else is the server's failure."""
    import modelport.errors as errors

    found = getattr(errors, kind, None)
    if isinstance(found, type) and issubclass(found, errors.ModelportError):
        return found(message)
    return RuntimeError(f"the monitor process failed: {kind}")


def _format(samples: list[list[Any]]) -> bytes:
    by_name: dict[str, list[str]] = {}
    for name, labels, value in samples:
        if name not in MONITOR_GAUGES:
            continue
        text = ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels.items())
        number = "NaN" if value != value else repr(float(value))
        by_name.setdefault(name, []).append(f"{name}{{{text}}} {number}" if text else f"{name} {number}")
    lines: list[str] = []
    for name, rows in by_name.items():
        lines += [f"# HELP {name} {MONITOR_GAUGES[name][0]}", f"# TYPE {name} gauge", *rows]
    return ("\n".join(lines) + "\n").encode() if lines else b""


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class _WithoutPandas:
    """An import hook of the evaluation child: pandas is not there."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name == "pandas" or name.startswith("pandas."):
            raise ModuleNotFoundError("pandas is not loaded in the monitor's child", name=name)
        return None


def _answer(home: Path, registry: Registry, drift: DriftSettings, asked: dict[str, Any]) -> dict[str, Any]:
    try:
        now = asked.get("now")
        moment = float(now) if isinstance(now, int | float) else None
        if asked.get("accuracy_only"):
            return accuracy_report(home, registry, asked["model"], settings=drift, now=moment)
        return _both(home, registry, asked["model"], asked["version"], asked["windows"], drift, moment)
    except ModelportError as exc:  # a client's mistake, said to the client
        return {"error": type(exc).__name__, "message": str(exc)}


def _serve_reports(home: Path, registry: Registry, drift: DriftSettings, idle: float) -> None:
    """Answer one JSON line per request line until standard input closes (the worker stopped) or no
    request came for ``idle`` seconds. (Blocking reads and a watchdog thread, not ``select``: the
    buffered reader may already hold the next request when the descriptor has nothing new.)"""
    state = {"last": time.monotonic(), "busy": False}

    def watchdog() -> None:
        while True:
            time.sleep(min(idle / 2, 5.0))
            if not state["busy"] and time.monotonic() - float(state["last"]) > idle:
                os._exit(0)  # idle: give the memory back; the worker starts another when asked

    threading.Thread(target=watchdog, daemon=True).start()
    for line in iter(sys.stdin.buffer.readline, b""):
        state["busy"] = True
        try:
            answer = _answer(home, registry, drift, json.loads(line))
        except Exception as exc:  # this request failed; the next may not: the type only, no paths
            answer = {"error": type(exc).__name__, "message": ""}
        finally:
            state["last"], state["busy"] = time.monotonic(), False
        sys.stdout.buffer.write(json.dumps(answer).encode() + b"\n")
        sys.stdout.buffer.flush()


def _child() -> int:
    """Entry of the evaluating child process: its configuration comes as JSON on standard input; it
    writes the gauges to ``HOME/run/monitor.json`` itself. On failure the last line on standard error
    is the error's type (no paths, no URL)."""
    with contextlib.suppress(OSError):
        os.nice(10)  # serving comes first
    # Kept small (it runs beside the server every interval): pyarrow would import pandas (~80 MB,
    # half a second) from its array and compute calls although nothing here needs it; without it
    # pyarrow takes its pandas-free paths. (Arrow's allocator is the system's: set by the parent.)
    sys.meta_path.insert(0, _WithoutPandas())
    try:
        config = json.loads(sys.stdin.buffer.readline())  # one line; a serving child's requests follow
        from modelport.registry.artifacts import open_artifact_store
        from modelport.registry.database import Database
        from modelport.registry.service import Registry
        from modelport.registry.store import RegistryStore
        from modelport.settings import Settings

        settings = Settings(home=Path(config["home"]), database_url=config["database_url"])
        database = Database(settings.resolved_database_url)
        try:
            registry = Registry(settings, RegistryStore(database), open_artifact_store(settings))
            drift = DriftSettings(
                threshold=float(config["threshold"]),
                min_rows=int(config["min_rows"]),
                window_seconds=float(config["window_seconds"]),
                accuracy_window_seconds=float(config["accuracy_window_seconds"]),
            )
            if "serve" in config:
                _serve_reports(settings.home, registry, drift, float(config["serve"]))
            elif "report" in config:
                sys.stdout.buffer.write(
                    json.dumps(_answer(settings.home, registry, drift, config["report"])).encode()
                )
            else:
                monitor = Monitor(settings.home, registry, drift, 0.0)
                monitor.publish(monitor.evaluate())
        finally:
            database.dispose()
    except Exception as exc:
        print(type(exc).__name__, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(_child())
