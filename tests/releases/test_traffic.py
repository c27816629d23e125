"""Releases on a real `--workers 2` server: canary share, sticky assignment, shadow, promote and rollback
under load, automatic rollback, and what the status, history and audit trail show. How the arm is
chosen, over many requests and keys, is tested as the pure function it is in test_policy.py.

One server and one registry for the module: each test starts from (and a fixture restores) no release
running and ``credit@production`` on v1."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import psutil
import pytest

from modelport.app import open_registry
from modelport.releases.policy import CANARY, Release, Sticky
from modelport.settings import Settings
from tests.conftest import invoke_cli as cli
from tests.conftest import until
from tests.releases.conftest import INFER
from tests.serving.conftest import Server, new_connection_each, registered_home, start_server, stop_server

TWO_WORKERS = ("--workers", "2")
FAST = {
    "MODELPORT_RELEASE_FLUSH_SECONDS": "0.5",  # per-arm counts reach the database twice a second
    "MODELPORT_PREDICTION_LOG_FLUSH_SECONDS": "0.3",  # logged answers (live accuracy) as often
}


@pytest.fixture(scope="module")
def shared_home(tmp_path_factory: pytest.TempPathFactory, data: pd.DataFrame, sklearn_model: object) -> Path:
    """``credit`` v1 (production), v2 and v3: the module's server's registry."""
    return registered_home(
        "releases", tmp_path_factory.mktemp("traffic") / "home", tmp_path_factory, data, sklearn_model
    )


@pytest.fixture(scope="module")
def server(shared_home: Path) -> Iterator[Server]:
    running = start_server(shared_home, *TWO_WORKERS, env=FAST)
    try:
        yield running
    finally:
        stop_server(running)


@pytest.fixture
def home(shared_home: Path, server: Server) -> Path:
    """The server's registry as every test starts: no release running, ``credit@production`` on v1
    (whatever the test before left), and both workers answering so."""
    changed = False
    if _status(shared_home)["release"] is not None:
        assert cli(shared_home, "release", "stop", "credit@production").returncode == 0
        changed = True
    registry = open_registry(Settings(home=shared_home))
    try:
        if registry.get("credit@production").number != 1:
            registry.set_alias("credit", "production", 1)
            changed = True
    finally:
        registry.close()
    if changed:
        _wait_for_only(server.url, "1")
    return shared_home


def _infer(client: httpx.Client, url: str, headers: dict[str, str] | None = None, body: Any = INFER) -> str:
    response = client.post(f"{url}/v2/models/credit/infer", json=body, headers=headers or {})
    assert response.status_code == 200, response.text
    return str(response.json()["model_version"])


def _by_f0(value: int, rest: tuple[float, ...] = (0.2, 0.3, 0.4, 0.5, 0.6)) -> dict[str, Any]:
    """A one-row request whose f0 (a sticky release's key by field) is ``value``."""
    row = [[float(value), *rest]]
    return {"inputs": [{"name": "input", "datatype": "FP64", "shape": [1, 6], "data": row}]}


def _wait_for_versions(url: str, wanted: set[str], timeout: float = 10.0, header: str | None = None) -> None:
    """Until the server answers with every version in ``wanted`` (a policy change has propagated);
    with ``header``, each probe carries a new value of it (a sticky release's key)."""
    deadline = time.monotonic() + timeout
    seen: set[str] = set()
    probe = 0
    with httpx.Client() as client:
        while not wanted <= seen:
            assert time.monotonic() < deadline, f"only saw versions {seen}"
            probe += 1
            seen.add(_infer(client, url, {header: f"probe-{probe}"} if header else None))


def _wait_for_sticky(url: str, header: str, timeout: float = 10.0) -> None:
    """Until every worker applies the sticky release: eight probe keys, each asked ten times on new
    connections (either worker), each always answered by one version. A worker still on the earlier,
    unsticky release answers a canary-side key with mixed versions."""
    deadline = time.monotonic() + timeout
    with new_connection_each() as client:
        while True:
            answers = [
                {_infer(client, url, {header: f"sticky-probe-{key}"}) for _ in range(10)} for key in range(8)
            ]
            if all(len(seen) == 1 for seen in answers):
                return
            assert time.monotonic() < deadline, f"the sticky release did not reach every worker: {answers}"


def _wait_for_only(url: str, version: str, timeout: float = 10.0) -> None:
    """Until 30 requests in a row, each on a new connection (either worker), are answered by ``version``."""
    deadline = time.monotonic() + timeout
    streak = 0
    with new_connection_each() as client:
        while streak < 30:
            answered = _infer(client, url)
            streak = streak + 1 if answered == version else 0
            assert time.monotonic() < deadline, f"still answered by {answered}, not only {version}"


def _status(home: Path) -> dict[str, Any]:
    shown = cli(home, "release", "status", "credit@production", "--json")
    assert shown.returncode == 0, shown.stderr
    return dict(json.loads(shown.stdout))


def _wait_for_counts(home: Path, arm: str, expected: int, timeout: float = 15.0) -> dict[str, Any]:
    """Until every worker has added its counts (they flush once a second)."""
    deadline = time.monotonic() + timeout
    while True:
        status = _status(home)
        arms = (status["release"] or {}).get("arms", {})
        if sum(arms.get(a, {}).get("requests", 0) for a in arm.split("+")) >= expected:
            return status
        assert time.monotonic() < deadline, f"counts did not arrive: {arms}"
        time.sleep(0.1)


def _settled_counts(home: Path, timeout: float = 15.0) -> dict[str, Any]:
    """The release's arms once no count is on its way: two reads a flush interval apart agree."""
    deadline = time.monotonic() + timeout
    arms = _status(home)["release"]["arms"]
    while True:
        time.sleep(0.6)  # longer than a worker's flush interval (FAST)
        again = _status(home)["release"]["arms"]
        if again == arms:
            return dict(arms)
        assert time.monotonic() < deadline, f"the counts kept changing: {arms} then {again}"
        arms = again


REQUESTS = 200  # the share itself is tested over 200,000 requests in tests/releases/test_policy.py


def test_canary_takes_its_weight_and_both_workers_count_it(home: Path, server: Server) -> None:
    started = cli(home, "release", "start", "credit@production", "--canary", "2", "--weight", "10")
    assert started.returncode == 0, started.stderr
    _wait_for_versions(server.url, {"1", "2"})
    # Everything counted from here on: a fresh release (a new id) resets the numbers.
    restarted = cli(home, "release", "stop", "credit@production")
    assert restarted.returncode == 0, restarted.stderr
    assert (
        cli(home, "release", "start", "credit@production", "--canary", "2", "--weight", "10").returncode == 0
    )
    _wait_for_versions(server.url, {"1", "2"})
    baseline = _settled_counts(home)  # with the probe requests above
    before = sum(baseline.get(a, {}).get("requests", 0) for a in ("primary", "canary"))

    answered: Counter[str] = Counter()
    lock = threading.Lock()

    def send(count: int) -> None:
        with new_connection_each() as client:  # both workers answer
            for _ in range(count):
                version = _infer(client, server.url)
                with lock:
                    answered[version] += 1

    threads = [threading.Thread(target=send, args=(REQUESTS // 4,)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(answered.values()) == REQUESTS and set(answered) == {"1", "2"}
    # 10 % of 200: 20 ± 4.2 (one standard deviation); five of them either way
    assert 0 < answered["2"] <= 41, answered

    # The status table counts exactly what the clients saw, across both workers.
    status = _wait_for_counts(home, "primary+canary", before + REQUESTS)
    arms = status["release"]["arms"]
    canary = arms["canary"]["requests"] - baseline.get("canary", {}).get("requests", 0)
    primary = arms["primary"]["requests"] - baseline.get("primary", {}).get("requests", 0)
    assert (canary, primary) == (answered["2"], answered["1"])
    assert arms["canary"]["version"] == 2 and arms["primary"]["version"] == 1
    total = arms["canary"]["requests"] + arms["primary"]["requests"]
    assert arms["canary"]["share"] == pytest.approx(arms["canary"]["requests"] / total, abs=1e-6)
    assert arms["canary"]["p99_ms"] is not None and arms["canary"]["error_rate"] == 0.0
    assert sum(arms["canary"]["classes"].values()) == pytest.approx(1.0)


def test_sticky_assignment_by_header_and_by_field(home: Path, server: Server) -> None:
    assert (
        cli(
            home,
            "release",
            "start",
            "credit@production",
            "--canary",
            "2",
            "--weight",
            "50",
            "--sticky-by",
            "header:X-Customer",
        ).returncode
        == 0
    )
    _wait_for_versions(server.url, {"1", "2"}, header="X-Customer")
    _wait_for_sticky(server.url, "X-Customer")  # both workers, not only the first to see it
    arms: dict[str, set[str]] = defaultdict(set)
    with new_connection_each() as client:  # a new connection per request: both workers answer every customer
        for round_ in range(5):
            for customer in range(60):
                arms[f"c{customer}"].add(_infer(client, server.url, {"X-Customer": f"c{customer}"}))
            del round_
    assert all(len(seen) == 1 for seen in arms.values()), arms
    canary_customers = sum(1 for seen in arms.values() if seen == {"2"})
    assert 15 <= canary_customers <= 45  # about half of 60 (binomial, p = 0.5: 30 ± 15 is > 4 sigma)

    # Requests without the key go to the primary, and are counted apart.
    with httpx.Client() as client:
        assert {_infer(client, server.url) for _ in range(30)} == {"1"}

    # By a field of the first row: the same value, the same arm — whichever worker answers.
    assert cli(home, "release", "stop", "credit@production").returncode == 0
    assert (
        cli(
            home,
            "release",
            "start",
            "credit@production",
            "--canary",
            "2",
            "--weight",
            "50",
            "--sticky-by",
            "field:f0",
        ).returncode
        == 0
    )
    deadline = time.monotonic() + 10
    with new_connection_each() as client:
        # until some worker answers a value from the canary: the release has arrived
        while not (
            canary_side := [v for v in range(40) if _infer(client, server.url, body=_by_f0(v)) == "2"]
        ):
            assert time.monotonic() < deadline, "the release by field never reached a worker"
        # Answers until here may predate the release on the other worker (it answers v1 to every
        # value): until a value from the canary is answered by v2 twenty times in a row, on new
        # connections (either worker). Count afresh.
        streak = 0
        while streak < 20:
            streak = streak + 1 if _infer(client, server.url, body=_by_f0(canary_side[0])) == "2" else 0
            assert time.monotonic() < deadline, "the release by field did not reach every worker"
    by_value: dict[float, set[str]] = defaultdict(set)
    with new_connection_each() as client:
        for round_ in range(3):
            for value in range(40):
                other = (0.2, 0.3) if round_ == 0 else (0.9, 0.1)  # other features change, the key does not
                body = _by_f0(value, (*other, 0.4, 0.5, 0.6))
                by_value[float(value)].add(_infer(client, server.url, body=body))
    assert all(len(seen) == 1 for seen in by_value.values()), by_value
    assert {next(iter(v)) for v in by_value.values()} == {"1", "2"}


def test_rollback_under_load_fails_no_request_and_history_shows_every_step(
    home: Path, server: Server
) -> None:
    registry = open_registry(Settings(home=home))
    try:  # the module's registry has the history of the tests before: this test's steps come after it
        earlier = registry.store.releases.history("credit", "production")
    finally:
        registry.close()
    failures: list[str] = []
    versions: list[str] = []  # in the order answered, by all threads
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(timeout=30) as client:
            while not stop.is_set():
                try:
                    response = client.post(f"{server.url}/v2/models/credit/infer", json=INFER)
                except httpx.HTTPError as exc:
                    failures.append(type(exc).__name__)
                    continue
                if response.status_code != 200:
                    failures.append(f"{response.status_code} {response.text[:100]}")
                else:
                    versions.append(str(response.json()["model_version"]))

    def until_answered_by(wanted: str, only: bool, since: int) -> None:
        """Until the load after answer ``since`` shows the step (``wanted`` answers it) and, with
        ``only``, every worker answers with ``wanted`` alone."""
        deadline = time.monotonic() + 10
        while wanted not in versions[since:]:
            assert time.monotonic() < deadline and not failures, (wanted, Counter(versions[since:]), failures)
            time.sleep(0.02)
        if only:
            _wait_for_only(server.url, wanted)

    threads = [threading.Thread(target=load) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        steps = [  # each with the answers that show it has reached the workers
            (("release", "start", "credit@production", "--canary", "2", "--weight", "20"), "2", False),
            (("release", "promote", "credit@production"), "2", True),
            (("release", "rollback", "credit@production"), "1", True),
            (("alias", "set", "credit@3", "production"), "3", True),
            (("release", "rollback", "credit@production"), "1", True),
        ]
        for step, wanted, only in steps:
            since = len(versions)
            done = cli(home, *step)
            assert done.returncode == 0, (step, done.stderr)
            until_answered_by(wanted, only, since)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert failures == []
    assert {"1", "2", "3"} <= set(versions)
    with httpx.Client() as client:
        assert {_infer(client, server.url) for _ in range(20)} == {"1"}  # rolled back from 3 to 1

    registry = open_registry(Settings(home=home))
    try:
        history = registry.store.releases.history("credit", "production")
        audit = [(r.action, r.target) for r in registry.store.audit_records()]
    finally:
        registry.close()
    assert [(e.action, e.version) for e in history[: len(earlier)]] == [
        (e.action, e.version) for e in earlier
    ]
    assert earlier[-1].version == 1  # where the steps start from
    shown = [(e.action, e.version, e.state.get("canary")) for e in history]
    assert shown[:1] + shown[len(earlier) :] == [
        ("set", 1, None),  # the registration's
        ("release", 1, 2),
        ("promote", 2, None),
        ("rollback", 1, None),  # no release running: back to the version before the last move
        ("set", 3, None),
        ("rollback", 1, None),
    ]
    actions = [a for a, target in audit if target == "credit@production"]
    assert actions[-5:] == [
        "release.start",
        "release.promote",
        "alias.rollback",
        "alias.set",
        "alias.rollback",
    ]


def test_automatic_rollback_when_the_canary_breaks_its_bound(home: Path, server: Server) -> None:
    # A p99 bound no real request can meet: the canary is rolled back once 20 requests were seen.
    assert (
        cli(
            home,
            "release",
            "start",
            "credit@production",
            "--canary",
            "2",
            "--weight",
            "50",
            "--auto-rollback",
            "p99_ms=0.001,window=30,min_requests=20",
        ).returncode
        == 0
    )
    _wait_for_versions(server.url, {"1", "2"})
    deadline = time.monotonic() + 20
    with httpx.Client() as client:
        while _status(home)["release"] is not None:
            assert time.monotonic() < deadline, "no automatic rollback"
            for _ in range(20):
                _infer(client, server.url)
            time.sleep(0.2)
    _wait_for_only(server.url, "1")  # the workers see the release gone
    registry = open_registry(Settings(home=home))
    try:
        last = registry.store.releases.history("credit", "production")[-1]
        records = [r for r in registry.store.audit_records() if r.action == "release.auto-rollback"]
    finally:
        registry.close()
    assert (last.action, last.actor, last.version) == ("auto-rollback", "auto-rollback", 1)
    assert len(records) == 1 and "p99" in str(records[0].after)


def _scorers(server: Server) -> list[psutil.Process]:
    """The shadow scorers of the server's workers."""
    found = []
    for process in psutil.Process(server.process.pid).children(recursive=True):
        try:
            if "modelport.serving.shadow_scorer" in " ".join(process.cmdline()):
                found.append(process)
        except psutil.NoSuchProcess:  # it exited between the listing and the look: gone is gone
            continue
    return found


SHADOWED = 50


def test_shadow_is_scored_never_returned_and_shows_live_accuracy(home: Path, server: Server) -> None:
    assert cli(home, "log-policy", "credit", "--sample", "1").returncode == 0
    try:
        assert cli(home, "release", "start", "credit@production", "--shadow", "3").returncode == 0
        # each worker starts its scorer once the release is in force there (and it warms the shadow)
        until(lambda: len(_scorers(server)) == 2, interval=0.02)
        answers = []
        with httpx.Client(base_url=server.url) as client:
            for i in range(SHADOWED):
                response = client.post(
                    "/v2/models/credit/infer", json=INFER, headers={"X-Request-ID": f"acc-{i}"}
                )
                assert response.status_code == 200, response.text
                assert response.json()["model_version"] == "1"  # the client never sees the shadow
                answers.append(response.json()["outputs"][0]["data"][0])
            status = _wait_for_counts(home, "shadow", SHADOWED)
            shadow = status["release"]["arms"]["shadow"]
            assert shadow["version"] == 3 and shadow["requests"] == SHADOWED and shadow["errors"] == 0
            assert shadow["compared"] == SHADOWED and shadow["agreement"] is not None
            # v3 is heavily regularised: on this row it predicts another class than v1 — and the status
            # says so.
            primary = status["release"]["arms"]["primary"]
            assert shadow["classes"] != primary["classes"] and shadow["agreement"] == 0.0

            # Live accuracy per arm. Labels may come before the logged answers: live accuracy joins
            # them when it is asked for.
            labels = [{"request_id": f"acc-{i}", "label": "c1"} for i in range(SHADOWED)]
            sent = client.post("/api/v1/feedback", json={"model": "credit", "labels": labels})
            assert sent.status_code == 200, sent.text
            # the workers log their answers, and the scorers the shadow's, every 0.3 s (FAST)
            deadline = time.monotonic() + 30
            while True:
                arms = _status(home)["release"]["arms"]
                shadow = arms.get("shadow", {}).get("live_accuracy") or {}
                primary = arms.get("primary", {}).get("live_accuracy") or {}
                if shadow.get("rows") == SHADOWED and primary.get("rows") == SHADOWED:
                    break
                assert time.monotonic() < deadline, arms
                time.sleep(0.1)
            over_http = client.get("/api/v1/models/credit/aliases/production/release").json()
        assert primary["accuracy"] == pytest.approx(sum(a == "c1" for a in answers) / SHADOWED)
        assert shadow["accuracy"] == 0.0  # v3 answers c2 for this row: every label says c1
        assert over_http["release"]["arms"]["shadow"]["live_accuracy"]["rows"] == SHADOWED
    finally:  # the other tests' requests are not logged
        assert cli(home, "log-policy", "credit", "--sample", "0").returncode == 0


class _Prober:
    """Requests sent without pause on a new connection each (so both workers answer), with the wall
    time of each answer and the version that gave it."""

    def __init__(self, url: str, headers: dict[str, str] | None = None) -> None:
        self.url = url
        self.headers = headers
        self.answers: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        with new_connection_each() as client:
            while not self._stop.is_set():
                version = _infer(client, self.url, self.headers)
                self.answers.append((time.time(), version))

    def __enter__(self) -> _Prober:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _committed(home: Path) -> float:
    """The wall time of the last change's commit (its alias-history time)."""
    registry = open_registry(Settings(home=home))
    try:
        return registry.store.releases.history("credit", "production")[-1].at.timestamp()
    finally:
        registry.close()


def _changed(home: Path, url: str, old: str, *step: str, headers: dict[str, str] | None = None) -> float:
    """Seconds from the change's commit to the last answer by ``old``, probed until twenty answers
    (on new connections: both workers) came more than a second after the commit."""
    with _Prober(url, headers) as prober:
        until(lambda: prober.answers, interval=0.02)  # the probe runs
        done = cli(home, *step)
        assert done.returncode == 0, done.stderr
        committed = _committed(home)
        until(lambda: sum(at > committed + 1.0 for at, _ in prober.answers) >= 20, interval=0.02)
    late = [at for at, version in prober.answers if version == old and at > committed]
    assert any(at > committed + 1.0 for at, _ in prober.answers), "the probe stopped too early"
    return max(late, default=committed) - committed


def test_policy_changes_reach_both_workers_within_a_second(home: Path, server: Server) -> None:
    """From each change's commit to the last answer of the old policy, on either worker."""
    assert (
        cli(home, "release", "start", "credit@production", "--canary", "2", "--weight", "50").returncode == 0
    )
    _wait_for_versions(server.url, {"1", "2"})
    seconds = [_changed(home, server.url, "1", "release", "promote", "credit@production")]  # all to v2
    seconds.append(_changed(home, server.url, "2", "release", "rollback", "credit@production"))  # all on v1
    # A sticky canary: a customer the release sends to v2 is answered by v2 on every worker.
    planned = Release("planned", 1, canary=2, weight=50.0, sticky=Sticky("header", "X-Customer"))
    customer = next(f"c{i}" for i in range(1000) if planned.arm("credit", "production", f"c{i}") == CANARY)
    sticky = ("--canary", "2", "--weight", "50", "--sticky-by", "header:X-Customer")
    seconds.append(
        _changed(
            home,
            server.url,
            "1",
            "release",
            "start",
            "credit@production",
            *sticky,
            headers={"X-Customer": customer},
        )
    )
    assert max(seconds) < 1.0, seconds
