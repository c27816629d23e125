"""The shadow scorer (serving/shadow_scorer.py): its wire format, the child process on its own (idle
priority, counts, refusals, a clean end), and as a child of a serving app (in this process: the scorer
is a child process all the same): killed and restarted, stopped with the release, copies beyond its
queue dropped and counted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest

from modelport.serving import shadow
from modelport.serving.shadow_scorer import FRAME, decode_arrays, encode, read_frame
from modelport.settings import Settings
from tests.conftest import invoke_cli as cli
from tests.conftest import until
from tests.releases.conftest import INFER
from tests.serving.conftest import serve_in_process

ROW = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]


def _frame_parts(frame: bytes) -> tuple[dict[str, Any], bytes]:
    size, length = FRAME.unpack(frame[: FRAME.size])
    header = json.loads(frame[FRAME.size : FRAME.size + size])
    return header, frame[FRAME.size + size : FRAME.size + size + length]


def test_arrays_survive_the_wire_exactly() -> None:
    arrays = [
        np.arange(12, dtype=np.float64).reshape(3, 4) / 7,
        np.array([1, -2, 3], dtype=np.int64),
        np.array([b"a", b"", "é".encode()], dtype=object),
        np.array(["c1", "c2", "ünï"], dtype=object),
        np.zeros((0, 6), dtype=np.float32),
        np.array([True, False]),
    ]
    header, payload = _frame_parts(encode({"op": "score", "x": [1]}, arrays))
    assert header["op"] == "score" and header["x"] == [1]
    decoded = decode_arrays(header, payload)
    assert len(decoded) == len(arrays)
    for sent, got in zip(arrays, decoded, strict=True):
        assert got.shape == sent.shape and got.dtype == sent.dtype
        assert sent.tolist() == got.tolist()


def test_a_cut_stream_ends_cleanly_and_an_absurd_frame_is_refused() -> None:
    frame = encode({"op": "warm"}, [np.ones(3)])
    for cut in (0, 3, FRAME.size + 2, len(frame) - 1):
        chunks = iter([frame[:cut], b""])
        assert read_frame(lambda n, chunks=chunks: next(chunks)) is None  # type: ignore[misc]
    huge = FRAME.pack(1 << 30, 0)
    with pytest.raises(ValueError, match="too large"):
        read_frame(lambda n: huge[:n])


def _score_frame(version: int, rows: list[list[float]], labels: list[str], *, width: int = 6) -> bytes:
    matrix = np.array(rows, dtype=np.float64).reshape(len(rows), width)
    header = {
        "op": "score",
        "model": "credit",
        "version": version,
        "release_id": "r1",
        "tensors": [{"name": "input", "datatype": "FP64"}],
        "rows": [1] * len(rows),
        "labels": True,
    }
    return encode(header, [matrix, np.array(labels, dtype=object)])


@pytest.fixture(params=["idle"])
def scorer(home: Path, request: pytest.FixtureRequest) -> Iterator[subprocess.Popen[bytes]]:
    settings = Settings(home=home)
    child = subprocess.Popen(
        [sys.executable, "-m", "modelport.serving.shadow_scorer"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert child.stdin is not None
    config = {
        "op": "config",
        "home": str(home),
        "database_url": settings.resolved_database_url,
        "artifact_url": settings.resolved_artifact_url,
        "log": False,
        "priority": request.param,
    }
    child.stdin.write(encode(config, []))
    child.stdin.flush()
    try:
        yield child
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()
        for stream in (child.stdin, child.stdout, child.stderr):
            if stream is not None:
                stream.close()


def _ask(child: subprocess.Popen[bytes], frame: bytes) -> dict[str, Any]:
    assert child.stdin is not None and child.stdout is not None
    child.stdin.write(frame)
    child.stdin.flush()
    answer = read_frame(child.stdout.read)
    assert answer is not None
    return answer[0]


def test_the_scorer_runs_at_idle_priority_counts_and_refuses_per_copy(
    scorer: subprocess.Popen[bytes],
) -> None:
    # v3 answers c2 on this row; the primary said c1 for the first two rows and c2 for the third
    reply = _ask(scorer, _score_frame(3, [ROW, ROW, ROW], ["c1", "c1", "c2"]))
    assert os.sched_getscheduler(scorer.pid) == os.SCHED_IDLE
    assert reply["copies"] == 3 and reply["scored"] == 3 and reply["failed"] == 0
    assert (reply["compared"], reply["agreed"]) == (3, 1)
    assert reply["classes"] == [["c2", 3]]

    # A copy the shadow's signature refuses fails alone (1e300 does not fit the float32 range check)
    bad = [ROW, [1e300, *ROW[1:]], ROW]
    reply = _ask(scorer, _score_frame(3, bad, ["c2", "c2", "c2"]))
    assert (reply["scored"], reply["failed"], reply["compared"], reply["agreed"]) == (2, 1, 2, 2)

    # Tensors no copy of which fits the shadow, and a version that does not exist: all failed, and
    # the scorer keeps going.
    assert _ask(scorer, _score_frame(3, [ROW[:5]], ["c1"], width=5))["failed"] == 1
    assert _ask(scorer, _score_frame(99, [ROW], ["c1"]))["failed"] == 1
    assert _ask(scorer, _score_frame(3, [ROW], ["c2"]))["scored"] == 1

    # The worker closing the pipe ends it cleanly.
    assert scorer.stdin is not None
    scorer.stdin.close()
    assert scorer.wait(timeout=30) == 0


@pytest.mark.parametrize("scorer", ["nice"], indirect=True)
def test_a_nice_scorer_takes_a_small_share_instead(scorer: subprocess.Popen[bytes]) -> None:
    assert _ask(scorer, _score_frame(3, [ROW], ["c2"]))["scored"] == 1
    assert os.sched_getscheduler(scorer.pid) == os.SCHED_OTHER
    assert psutil.Process(scorer.pid).nice() == 19


def _scorers(others: frozenset[int] = frozenset()) -> list[psutil.Process]:
    """The shadow scorers of the app running in this process (its children), but for ``others``."""
    found = []
    for process in psutil.Process().children(recursive=True):
        if process.pid in others:
            continue
        try:
            if "modelport.serving.shadow_scorer" in " ".join(process.cmdline()):
                found.append(process)
        except psutil.NoSuchProcess:  # it exited between the listing and the look: gone is gone
            continue
    return found


def _shadow_arm(home: Path) -> dict[str, Any]:
    shown = cli(home, "release", "status", "credit@production", "--json")
    assert shown.returncode == 0, shown.stderr
    return dict((json.loads(shown.stdout)["release"] or {}).get("arms", {}).get("shadow", {}))


# The app in this process (one worker): the scorer is its child process all the same, and the pause
# before a scorer is restarted can be shortened for the test.
FAST: dict[str, Any] = {"release_flush_seconds": 0.3, "route_poll_seconds": 0.1}
RESTART = 2.0  # seconds (RESTART_SECONDS is 5): still longer than the kill comes after the first start


def test_a_killed_scorer_is_counted_and_restarted_and_stops_with_the_release(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shadow, "RESTART_SECONDS", RESTART)
    assert cli(home, "release", "start", "credit@production", "--shadow", "3").returncode == 0
    others = frozenset(p.pid for p in _scorers())  # not this app's (none, unless a test left one)
    with serve_in_process(home, **FAST) as app, app.client() as client:
        first = until(lambda: _scorers(others), interval=0.02)  # started with the release, before any request
        # a scorer is restarted at most every RESTART seconds after the last start, which was before now
        restart_allowed = time.monotonic() + RESTART
        assert len(first) == 1
        until(lambda: os.sched_getscheduler(first[0].pid) == os.SCHED_IDLE, interval=0.02)  # set as it starts
        for _ in range(50):
            assert client.post("/v2/models/credit/infer", json=INFER).status_code == 200
        until(lambda: _shadow_arm(home).get("requests") == 50, interval=0.05)

        first[0].kill()
        first[0].wait(10)
        # requests keep being answered; copies offered while no scorer runs are dropped and counted
        for _ in range(50):
            assert client.post("/v2/models/credit/infer", json=INFER).status_code == 200
        time.sleep(max(0.0, restart_allowed - time.monotonic()))  # past the restart pause
        for _ in range(50):
            assert client.post("/v2/models/credit/infer", json=INFER).status_code == 200
        arm = until(
            lambda: (a := _shadow_arm(home)).get("requests", 0) + a.get("dropped", 0) >= 150 and a,
            interval=0.05,
        )
        assert arm["requests"] >= 100 and arm["requests"] + arm["dropped"] == 150 and arm["errors"] == 0
        again = _scorers(others)
        assert len(again) == 1 and again[0].pid != first[0].pid

        assert cli(home, "release", "stop", "credit@production").returncode == 0
        until(lambda: not _scorers(others), interval=0.02)  # no shadow left: the scorer is gone


def test_copies_beyond_the_queue_are_dropped_and_the_primary_never_waits(home: Path) -> None:
    """A scorer that cannot keep up (capacity 4 copies) loses copies, counted; every request is
    answered by the primary."""
    assert cli(home, "release", "start", "credit@production", "--shadow", "3").returncode == 0
    others = frozenset(p.pid for p in _scorers())
    with serve_in_process(home, shadow_queue=4, **FAST) as app, app.client() as client:
        until(lambda: _scorers(others), interval=0.02)
        body = {"inputs": [{"name": "input", "datatype": "FP64", "shape": [1, 6], "data": [ROW]}]}
        import concurrent.futures

        def send(_: int) -> int:
            return client.post("/v2/models/credit/infer", json=body).status_code

        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            codes = list(pool.map(send, range(400)))
        assert codes == [200] * 400
        arm = until(
            lambda: (a := _shadow_arm(home)).get("requests", 0) + a.get("dropped", 0) >= 400 and a,
            interval=0.05,
        )
        assert arm["requests"] + arm["dropped"] == 400 and arm["dropped"] > 0 and arm["requests"] > 0
