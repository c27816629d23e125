"""`modelport validate`: run every check of docs/validation.md against a private server, and build the
report. The checks talk HTTP to a real `modelport serve` (two workers, loopback only), so what is
validated is what will serve; the latency profile runs in-process; the load test runs Locust in its own
process (it patches the standard library with gevent).
"""

from __future__ import annotations

import contextlib
import cProfile
import json
import math
import os
import platform
import pstats
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from modelport.environment import fingerprint, snapshot
from modelport.errors import InvalidInput, MissingExtra, RuntimeFailure
from modelport.optional import install_command, require
from modelport.progress import Progress, no_progress
from modelport.registry.records import VersionRecord
from modelport.registry.service import GOLDEN_TOLERANCE, Registry
from modelport.settings import Settings
from modelport.signature import Signature
from modelport.validation.cases import Case, finite_probabilities, generate, random_rows, values_for_json

if TYPE_CHECKING:
    import httpx
else:
    httpx = require("httpx", "validate", "modelport validate")
# Checked now, not after a server was started and half the checks ran.
require("hypothesis", "validate", "modelport validate")

__all__ = ["CheckResult", "Report", "parse_load", "validate"]

_MAX_LISTED = 20


@dataclass
class CheckResult:
    name: str
    passed: bool
    cases: int
    detail: str
    failures: list[str] = field(default_factory=list)


@dataclass
class Report:
    ref: str
    model: str
    version: int
    passed: bool
    started_at: str
    seconds: float
    sla_p99_ms: float
    checks: list[CheckResult]
    latency: dict[str, Any]
    load: dict[str, Any] | None
    environment: dict[str, Any]
    environment_hash: str
    machine: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def markdown(self) -> str:
        verdict = "PASSED" if self.passed else "FAILED"
        lines = [
            f"# Validation of {self.ref}: {verdict}",
            "",
            f"- started {self.started_at}, took {self.seconds:.1f} s",
            f"- machine: {self.machine['processor']} ({self.machine['cores']} cores), "
            f"{self.machine['system']}",
            f"- Python {self.environment['python']}; "
            + ", ".join(f"{k} {v}" for k, v in sorted(self.environment["packages"].items())),
            f"- environment fingerprint `{self.environment_hash[:16]}…`",
            f"- latency SLA: p99 ≤ {self.sla_p99_ms:g} ms",
            "",
            "| check | verdict | cases | detail |",
            "|---|---|---|---|",
        ]
        for check in self.checks:
            verdict_cell = "pass" if check.passed else "**FAIL**"
            lines.append(f"| {check.name} | {verdict_cell} | {check.cases} | {check.detail} |")
        for check in self.checks:
            if check.failures:
                lines += ["", f"## Failing cases: {check.name}", ""]
                lines += [f"- {failure}" for failure in check.failures[:_MAX_LISTED]]
                if len(check.failures) > _MAX_LISTED:
                    lines.append(f"- … and {len(check.failures) - _MAX_LISTED} more")
        latency = self.latency
        lines += [
            "",
            "## Latency in-process (one row, one thread, the serving runtime)",
            "",
            f"p50 {latency['p50_us']:.0f} µs · p95 {latency['p95_us']:.0f} µs · "
            f"p99 {latency['p99_us']:.0f} µs over {latency['calls']} calls",
            "",
            "Hottest functions (cProfile, own time):",
            "",
        ]
        lines += [f"- `{entry}`" for entry in latency["hottest"]]
        if self.load is not None:
            load = self.load
            lines += [
                "",
                "## Load (Locust, headless, one server worker on 127.0.0.1)",
                "",
                f"{load['target_rps']:g} req/s for {load['seconds']:g} s with {load['users']} users: "
                f"{load['requests']:,} requests, {load['failures']:,} failures, "
                f"{load['achieved_rps']:.1f} req/s; "
                f"p50 {load['p50_ms']:g} ms · p95 {load['p95_ms']:g} ms · p99 {load['p99_ms']:g} ms "
                f"(SLA {self.sla_p99_ms:g} ms).",
                f"Server's own statistics: {load['server_count']:,} inferences, mean "
                f"{load['server_mean_ms']:.2f} ms inside the server "
                f"(Locust mean {load['mean_ms']:.2f} ms end to end).",
            ]
        return "\n".join(lines) + "\n"


def parse_load(text: str) -> tuple[float, float]:
    """``RPS:SECONDS`` → (rate, seconds)."""
    try:
        rate_text, seconds_text = text.split(":")
        rate, seconds = float(rate_text), float(seconds_text)
    except ValueError:
        raise InvalidInput(f"--load {text!r} must look like RPS:SECONDS, e.g. 200:30") from None
    if not (0 < rate <= 20_000 and 0 < seconds <= 3600):
        raise InvalidInput("--load needs 0 < RPS ≤ 20000 and 0 < SECONDS ≤ 3600")
    if seconds != int(seconds):  # Locust's run time is whole seconds ("1.5s" is refused at run time)
        raise InvalidInput(f"--load SECONDS is a whole number of seconds, not {seconds:g}")
    return rate, seconds


# -- the private server ---------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def _server(settings: Settings, workers: int) -> Iterator[str]:
    port = _free_port()
    env = {
        **os.environ,
        "MODELPORT_HOME": str(settings.home.resolve()),
        "MODELPORT_DATABASE_URL": settings.resolved_database_url,
        "MODELPORT_ARTIFACT_URL": settings.resolved_artifact_url,
        "MODELPORT_DRAIN_SECONDS": "0",
    }
    command = [sys.executable, "-m", "modelport.cli.main", "serve", "--port", str(port)]
    process = subprocess.Popen(
        [*command, "--workers", str(workers), "--insecure-dev"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeFailure("the validation server did not start")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeFailure("the validation server did not become ready within 60 s")
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# -- talking to it --------------------------------------------------------------------------------


@dataclass
class Answer:
    status: int
    labels: list[Any] | None = None
    probabilities: np.ndarray | None = None
    values: np.ndarray | None = None
    flags: dict[str, Any] | None = None
    error: str = ""


def _body(signature: Signature, columns: dict[str, list[Any]]) -> bytes:
    inputs = []
    for feature in signature.features:
        values = columns[feature.name]
        inputs.append(
            {
                "name": feature.name,
                "datatype": "FP64" if feature.numeric else "BYTES",
                "shape": [len(values)],
                "data": values_for_json(values) if feature.numeric else values,
            }
        )
    # The standard library writes NaN and ±Infinity as the tokens the server accepts.
    return json.dumps({"inputs": inputs}).encode()


class Client:
    def __init__(self, url: str, version: VersionRecord) -> None:
        self.url = url
        self.path = f"/v2/models/{version.model}/versions/{version.number}/infer"
        self.signature = Signature.from_dict(version.signature)
        self.http = httpx.Client(base_url=url, timeout=60)

    def ask(self, columns: dict[str, list[Any]], fresh: bool = False) -> Answer:
        body = _body(self.signature, columns)
        if fresh:  # a new connection: the kernel may hand it to either worker
            with httpx.Client(base_url=self.url, timeout=60) as client:
                response = client.post(self.path, content=body)
        else:
            response = self.http.post(self.path, content=body)
        return _answer(response)

    def signature_rows(self, n: int, seed: int = 3) -> dict[str, list[Any]]:
        """``n`` random rows within the signature's observed ranges, as columns."""
        return random_rows(self.signature, n, seed)

    def close(self) -> None:
        self.http.close()


def _answer(response: httpx.Response) -> Answer:
    try:
        document = response.json()
    except ValueError:
        return Answer(response.status_code, error=response.text[:200])
    if response.status_code != 200:
        return Answer(response.status_code, error=str(document.get("error", ""))[:300])
    outputs = {o["name"]: o for o in document.get("outputs", [])}
    answer = Answer(200, flags=(document.get("parameters") or {}).get("flags"))
    if "probabilities" in outputs:
        tensor = outputs["probabilities"]
        answer.probabilities = np.asarray(tensor["data"], dtype=np.float64).reshape(tensor["shape"])
    if "label" in outputs:
        answer.labels = list(outputs["label"]["data"])
    for name, tensor in outputs.items():
        if name not in ("label", "probabilities"):
            answer.values = np.asarray(tensor["data"], dtype=np.float64)
    return answer


def _valid(answer: Answer, rows: int, classes: list[str]) -> str | None:
    """Why an answer is not a valid prediction for ``rows`` rows, or ``None``."""
    if answer.status != 200:
        return f"HTTP {answer.status}: {answer.error}"
    if answer.probabilities is not None:
        if answer.probabilities.shape[0] != rows:
            return f"{answer.probabilities.shape[0]} answers for {rows} rows"
        if not finite_probabilities(answer.probabilities):
            return "probabilities not finite, outside [0, 1] or not summing to 1"
        if (
            answer.labels is not None
            and classes
            and any(str(label) not in classes for label in answer.labels)
        ):
            return "a label outside the model's classes"
    elif answer.values is not None:
        if answer.values.shape[0] != rows or not np.isfinite(answer.values).all():
            return "values missing or not finite"
    else:
        return "no prediction in the answer"
    return None


def _judge(case: Case, answer: Answer, classes: list[str]) -> str | None:
    """Why the answer breaks the case's promise, or ``None``."""
    invalid = _valid(answer, case.rows, classes)
    named = case.feature is None or case.feature in answer.error
    if case.expect == "score":
        return invalid
    if case.expect == "flag":
        if invalid:
            return f"expected an answer with a flag: {invalid}"
        return (
            None
            if answer.flags and (case.feature is None or case.feature in answer.flags)
            else "answered without a flag"
        )
    if case.expect == "reject":
        if answer.status == 400 and named:
            return None
        what = case.feature or "the problem"
        return f"expected 400 naming {what}, got HTTP {answer.status} {answer.error}".strip()
    if invalid is None or (answer.status == 400 and named):  # score_or_reject
        return None
    return f"expected an answer or a 400 naming {case.feature}: {invalid}"


def _max_difference(a: Answer, b: Answer) -> float:
    if a.probabilities is not None and b.probabilities is not None:
        if a.labels != b.labels:
            return math.inf
        return float(np.max(np.abs(a.probabilities - b.probabilities))) if a.probabilities.size else 0.0
    if a.values is not None and b.values is not None:
        return float(np.max(np.abs(a.values - b.values))) if a.values.size else 0.0
    return math.inf


def _concat(answers: list[Answer]) -> Answer:
    merged = Answer(200, labels=[])
    if answers and answers[0].probabilities is not None:
        merged.probabilities = np.vstack([a.probabilities for a in answers if a.probabilities is not None])
        merged.labels = [label for a in answers for label in (a.labels or [])]
    elif answers:
        merged.values = np.concatenate([a.values for a in answers if a.values is not None])
        merged.labels = None
    return merged


def _slice(columns: dict[str, list[Any]], start: int, stop: int) -> dict[str, list[Any]]:
    return {name: values[start:stop] for name, values in columns.items()}


# -- the checks -----------------------------------------------------------------------------------


def _golden(client: Client, version: VersionRecord) -> CheckResult:
    golden = version.golden
    columns = {name: [row[i] for row in golden["rows"]] for i, name in enumerate(golden["columns"])}
    answer = client.ask(columns)
    return _compare_golden(version, answer, "served")


def _golden_in_process(registry: Registry, version: VersionRecord) -> CheckResult:
    """When the server refuses the version, replay the golden rows in-process to name the rows."""
    loaded = registry.load(version)
    try:
        golden = version.golden
        prediction = loaded.predict_batch(loaded.signature.rows_batch(golden["columns"], golden["rows"]))
    finally:
        loaded.close()
    answer = Answer(200, probabilities=prediction.probabilities, values=prediction.values)
    answer.labels = None if prediction.labels is None else [str(v) for v in prediction.labels]
    return _compare_golden(version, answer, "in-process")


def _compare_golden(version: VersionRecord, answer: Answer, where: str) -> CheckResult:
    golden = version.golden
    outputs = golden["outputs"]
    failures: list[str] = []
    if answer.status != 200:
        failures.append(f"HTTP {answer.status}: {answer.error}")
    elif "probabilities" in outputs and answer.probabilities is not None:
        expected = np.asarray(outputs["probabilities"], dtype=np.float64)
        for index, (want, got) in enumerate(zip(outputs["labels"], answer.labels or [], strict=False)):
            if str(want) != str(got):
                failures.append(f"golden row {index}: label {got!r}, recorded {want!r}")
        deviation = np.abs(expected - answer.probabilities).max(axis=1)
        for index in np.flatnonzero(deviation > GOLDEN_TOLERANCE)[:_MAX_LISTED]:
            failures.append(
                f"golden row {index}: probabilities off by {deviation[index]:.2e} "
                f"(tolerance {GOLDEN_TOLERANCE:g})"
            )
    elif "values" in outputs and answer.values is not None:
        expected = np.asarray([np.nan if v is None else v for v in outputs["values"]], dtype=np.float64)
        deviation = np.abs(expected - answer.values) / np.maximum(1.0, np.abs(expected))
        for index in np.flatnonzero(~(deviation <= GOLDEN_TOLERANCE))[:_MAX_LISTED]:
            failures.append(f"golden row {index}: value off by {deviation[index]:.2e}")
    else:
        failures.append("the answer has none of the recorded outputs")
    rows = len(golden["rows"])
    return CheckResult(
        "golden cases", not failures, rows, f"{rows} recorded rows, tolerance {GOLDEN_TOLERANCE:g}", failures
    )


def _generated(client: Client, version: VersionRecord, policy: str) -> list[CheckResult]:
    signature = client.signature
    classes = [str(c) for c in signature.outputs.classes or []]
    by_check: dict[str, list[tuple[Case, str | None]]] = {}
    for case in generate(signature, policy):
        by_check.setdefault(case.check, []).append((case, _judge(case, client.ask(case.columns), classes)))
    expectations = {
        "in-range": "valid answers",
        "boundary": "valid answers at each feature's observed minimum and maximum",
        "out-of-range": f"{'refused with 400' if policy == 'reject' else 'answered, flagged'} ({policy})",
        "missing": "valid answers (or a 400 naming the feature where training had no missing values)",
        "nan-inf": "±inf refused with 400",
        "wrong-type": "refused with 400",
        "unknown-category": f"{'refused' if policy == 'reject' else 'flagged'} (policy {policy})",
        "empty-batch": "answered with zero predictions",
        "large-batch": "valid answers",
    }
    results = []
    for check, judged in by_check.items():
        failures = [f"{case.name}: {why}" for case, why in judged if why]
        results.append(CheckResult(check, not failures, len(judged), expectations.get(check, ""), failures))
    return results


def _determinism(client: Client) -> CheckResult:
    columns = _slice(client.signature_rows(16), 0, 16)
    answers = [client.ask(columns, fresh=True) for _ in range(8)]
    failures = [
        f"request {i + 1}: differs from request 1 by {_max_difference(answers[0], a):.2e}"
        for i, a in enumerate(answers[1:], start=1)
        if a.status != 200 or _max_difference(answers[0], a) != 0.0
    ]
    if answers[0].status != 200:
        failures.insert(0, f"HTTP {answers[0].status}: {answers[0].error}")
    return CheckResult(
        "determinism", not failures, 8, "the same 16 rows 8 times on fresh connections: identical", failures
    )


def _online_vs_batch(client: Client) -> CheckResult:
    rows = 100
    columns = client.signature_rows(rows, seed=7)
    batch = client.ask(columns)
    singles = [client.ask(_slice(columns, i, i + 1)) for i in range(rows)]
    failures = []
    if batch.status != 200 or any(s.status != 200 for s in singles):
        failures.append("a request was not answered")
    else:
        deviation = _max_difference(batch, _concat(singles))
        if deviation > 1e-6:
            failures.append(f"one-row answers differ from the batch answer by {deviation:.2e}")
    large = client.ask(client.signature_rows(1024, seed=8))
    parts = [client.ask(_slice(client.signature_rows(1024, seed=8), i, i + 256)) for i in range(0, 1024, 256)]
    if large.status == 200 and all(p.status == 200 for p in parts):
        deviation = _max_difference(large, _concat(parts))
        if deviation > 1e-6:
            failures.append(f"1,024 rows in one request differ from 4 × 256 by {deviation:.2e}")
    else:
        failures.append("the large-batch comparison was not answered")
    return CheckResult(
        "online vs batch",
        not failures,
        rows + 1024,
        "100 rows one by one = in one request; 1,024 = 4 × 256 (1e-6)",
        failures,
    )


def _property_based(client: Client, examples: int = 40) -> CheckResult:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    signature = client.signature
    classes = [str(c) for c in signature.outputs.classes or []]
    failures: list[str] = []

    def column(feature: Any) -> st.SearchStrategy[Any]:
        if not feature.numeric:
            return st.sampled_from(feature.categories or ["a"])
        lo = feature.minimum if feature.minimum is not None else -1e6
        hi = feature.maximum if feature.maximum is not None else 1e6
        return st.floats(min_value=lo, max_value=hi, allow_nan=False, allow_infinity=False)

    rows = st.lists(st.tuples(*[column(f) for f in signature.features]), min_size=1, max_size=8)

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(rows)
    def probe(drawn: list[tuple[Any, ...]]) -> None:
        columns = {f.name: [row[i] for row in drawn] for i, f in enumerate(signature.features)}
        why = _valid(client.ask(columns), len(drawn), classes)
        if why and len(failures) < _MAX_LISTED:
            failures.append(f"{json.dumps(columns)[:200]}: {why}")

    probe()
    return CheckResult(
        "property-based", not failures, examples, "rows drawn within the signature: valid answers", failures
    )


def _latency(registry: Registry, version: VersionRecord) -> dict[str, Any]:
    loaded = registry.load(version)
    try:
        golden = version.golden
        batch = loaded.signature.rows_batch(golden["columns"], golden["rows"][:1])
        for _ in range(50):
            loaded.predict_batch(batch)
        times = []
        for _ in range(2000):
            start = time.perf_counter()
            loaded.predict_batch(batch)
            times.append(time.perf_counter() - start)
        profile = cProfile.Profile()
        profile.enable()
        for _ in range(300):
            loaded.predict_batch(batch)
        profile.disable()
    finally:
        loaded.close()
    times.sort()
    stats = pstats.Stats(profile)
    entries = sorted(stats.stats.items(), key=lambda item: item[1][2], reverse=True)[:8]  # type: ignore[attr-defined]
    hottest = [
        f"{Path(file).name}:{line} {name} — {own / calls * 1e6:.1f} µs/call own time"
        for (file, line, name), (_, calls, own, _, _) in entries
        if calls
    ]
    return {
        "calls": len(times),
        "p50_us": times[len(times) // 2] * 1e6,
        "p95_us": times[int(len(times) * 0.95)] * 1e6,
        "p99_us": times[int(len(times) * 0.99)] * 1e6,
        "hottest": hottest,
    }


def _load(
    settings: Settings, version: VersionRecord, client: Client, rate: float, seconds: float
) -> dict[str, Any]:
    """Locust against a one-worker server (the SLA per worker), compared with the server's statistics."""
    users = max(4, min(64, math.ceil(rate / 25)))
    if find_spec("locust") is None:  # looked up, not imported: Locust patches the standard library
        raise MissingExtra(
            f"the load test (--load) needs locust, which is not installed: {install_command('validate')}"
        )
    body = _body(client.signature, client.signature_rows(1, seed=11))
    with _server(settings, workers=1) as url, tempfile.TemporaryDirectory() as scratch:
        body_file = Path(scratch) / "body.json"
        body_file.write_bytes(body)
        stats_path = f"/v2/models/{version.model}/versions/{version.number}/stats"
        httpx.post(url + client.path, content=body, timeout=30)  # load and warm before the clock starts
        before = _server_count(url, stats_path)
        env = {
            **os.environ,
            "MODELPORT_LOAD_PATH": client.path,
            "MODELPORT_LOAD_BODY": str(body_file),
            "MODELPORT_LOAD_USER_RPS": repr(rate / users),
        }
        locustfile = str(Path(__file__).with_name("locustfile.py"))
        command = [sys.executable, "-m", "locust", "-f", locustfile, "--headless", "-u", str(users)]
        command += ["-r", str(users), "-t", f"{seconds:g}s", "--host", url, "--json", "--only-summary"]
        command += ["--loglevel", "ERROR", "--exit-code-on-error", "0"]
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=seconds + 120)
        try:
            stats = next(s for s in json.loads(done.stdout) if s["name"] == "infer")
        except (ValueError, StopIteration, KeyError, TypeError):
            raise RuntimeFailure(
                f"the Locust run failed: {(done.stderr or done.stdout).strip()[-300:]}"
            ) from None
        after_count, after_ns = _server_count(url, stats_path)
    count = after_count - before[0]
    requests = int(stats["num_requests"])
    elapsed = max(float(stats["last_request_timestamp"]) - float(stats["start_time"]), 1e-9)
    return {
        "target_rps": rate,
        "seconds": seconds,
        "users": users,
        "requests": requests,
        "failures": int(stats["num_failures"]),
        "achieved_rps": requests / elapsed,
        "mean_ms": float(stats["total_response_time"]) / max(requests, 1),
        "p50_ms": _percentile(stats["response_times"], 0.50),
        "p95_ms": _percentile(stats["response_times"], 0.95),
        "p99_ms": _percentile(stats["response_times"], 0.99),
        "server_count": count,
        "server_mean_ms": (after_ns - before[1]) / max(count, 1) / 1e6,
    }


def _percentile(histogram: dict[str, int], q: float) -> float:
    """A percentile from Locust's histogram of response times (ms, rounded as Locust rounds them)."""
    points = sorted((float(ms), int(n)) for ms, n in histogram.items())
    total = sum(n for _, n in points)
    seen = 0
    for ms, n in points:
        seen += n
        if seen >= q * total:
            return ms
    return points[-1][0] if points else 0.0


def _server_count(url: str, path: str) -> tuple[int, int]:
    stats = httpx.get(url + path, timeout=30).json()["model_stats"]
    success = stats[0]["inference_stats"]["success"] if stats else {"count": 0, "ns": 0}
    return int(success["count"]), int(success["ns"])


def _machine() -> dict[str, Any]:
    processor = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                processor = line.split(":", 1)[1].strip()
                break
    return {"processor": processor, "cores": os.cpu_count(), "system": platform.platform(terse=True)}


def validate(
    registry: Registry,
    ref: str,
    *,
    sla_p99_ms: float = 250.0,
    load: tuple[float, float] | None = None,
    progress: Progress = no_progress,
) -> Report:
    """Run every check on ``ref`` and return the report (storing it is the caller's choice);
    ``progress`` hears each stage as it starts."""
    version = registry.get(ref)
    started = datetime.now(UTC)
    clock = time.monotonic()
    policy = registry.store.policies().get(version.model, "flag")
    checks: list[CheckResult] = []
    progress("starting a private server (2 workers)")
    with _server(registry.settings, workers=2) as url:
        client = Client(url, version)
        try:
            progress("golden cases")
            golden = _golden(client, version)
            checks.append(golden)
            if golden.failures and golden.failures[0].startswith("HTTP 5"):
                # The server will not serve this version (it failed to load or to reproduce its golden
                # cases at warm-up): say why, name the rows in-process, and run nothing else through it.
                refusal = golden.failures[0]
                checks[-1] = _golden_in_process(registry, version)
                checks[-1].failures.insert(0, f"the server refuses to serve this version: {refusal}")
                checks[-1].passed = False
            else:
                progress("generated in-range, out-of-range, missing and edge cases")
                checks.extend(_generated(client, version, policy))
                progress("determinism")
                checks.append(_determinism(client))
                progress("online vs batch")
                checks.append(_online_vs_batch(client))
                progress("property-based inputs")
                checks.append(_property_based(client))
        finally:
            client.close()
    progress("latency profile (in-process)")
    latency = _latency(registry, version)
    load_result = None
    if load is not None and all(check.passed for check in checks):
        progress(f"load test: {load[0]:g} requests/s for {load[1]:g} s")
        load_client = Client("http://127.0.0.1", version)
        load_result = _load(registry.settings, version, load_client, *load)
        load_client.close()
        failures = []
        if load_result["failures"]:
            failures.append(f"{load_result['failures']} of {load_result['requests']} requests failed")
        if load_result["p99_ms"] > sla_p99_ms:
            failures.append(f"p99 {load_result['p99_ms']:g} ms is over the SLA of {sla_p99_ms:g} ms")
        # Requests in flight when Locust stops are answered (and counted) by the server but not
        # recorded by Locust: at most one per user.
        slack = max(load_result["users"], 0.01 * load_result["requests"])
        if abs(load_result["server_count"] - load_result["requests"]) > slack:
            failures.append(
                f"Locust counted {load_result['requests']} requests, the server {load_result['server_count']}"
            )
        checks.append(
            CheckResult(
                "load",
                not failures,
                load_result["requests"],
                f"{load_result['achieved_rps']:.0f} req/s, p99 {load_result['p99_ms']:g} ms "
                f"(SLA {sla_p99_ms:g})",
                failures,
            )
        )
    environment = snapshot()
    return Report(
        ref=version.ref,
        model=version.model,
        version=version.number,
        passed=all(check.passed for check in checks),
        started_at=started.isoformat(timespec="seconds"),
        seconds=time.monotonic() - clock,
        sla_p99_ms=sla_p99_ms,
        checks=checks,
        latency=latency,
        load=load_result,
        environment=environment,
        environment_hash=fingerprint(environment),
        machine=_machine(),
    )
