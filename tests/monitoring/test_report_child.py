"""The monitor's report child (monitoring/monitor.py ``_Reporter``): reports asked of a server (the
console's monitoring page, ``GET …/drift``) are answered by one long-lived child process instead of one
new Python process each — one that died is replaced, one left idle exits by itself, and none outlives
the monitor. Real processes, a real registry."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

import modelport.monitoring.monitor as monitor_module
from modelport.app import open_registry
from modelport.errors import ModelNotFound
from modelport.monitoring.monitor import DriftSettings, Monitor, _both
from modelport.registry.service import Registry
from modelport.settings import Settings
from tests.conftest import until


@pytest.fixture
def monitor(served_home: Path) -> Iterator[Monitor]:
    settings = Settings(home=served_home)
    registry: Registry = open_registry(settings)
    running = Monitor(
        served_home, registry, DriftSettings(), 60.0, database_url=settings.resolved_database_url
    )
    yield running
    running.close()
    registry.close()


def _child(monitor: Monitor) -> int:
    process = monitor._reports._process  # noqa: SLF001 -- which child answered is what is tested
    assert process is not None and process.poll() is None
    return process.pid


def test_one_child_answers_every_report_and_a_killed_one_is_replaced(monitor: Monitor) -> None:
    expected = _both(monitor.home, monitor.registry, "credit", None, 3, DriftSettings())
    first = monitor.report("credit", windows=3)
    assert {k: v for k, v in first.items() if k != "until"} == {
        k: v for k, v in expected.items() if k != "until"
    }
    pid = _child(monitor)
    monitor.report("credit", windows=3, accuracy_only=True)
    assert _child(monitor) == pid  # the same process answered again
    with pytest.raises(ModelNotFound):  # a client's mistake comes back as the same error class
        monitor.report("no-such-model")
    assert _child(monitor) == pid  # and the child keeps serving
    killed = monitor._reports._process  # noqa: SLF001
    assert killed is not None
    os.kill(pid, signal.SIGKILL)
    until(lambda: killed.poll() is not None, timeout=10)
    assert monitor.report("credit")["model"] == "credit"  # a new child answers
    assert _child(monitor) != pid
    last = _child(monitor)
    monitor.close()
    with pytest.raises(ProcessLookupError):
        os.kill(last, 0)  # gone: no child outlives its monitor


def test_an_idle_child_exits_and_the_next_report_starts_another(
    monitor: Monitor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(monitor_module, "REPORTER_IDLE_SECONDS", 0.5)
    monitor.report("credit")
    process = monitor._reports._process  # noqa: SLF001
    assert process is not None
    until(lambda: process.poll() is not None, timeout=15)  # exited by itself
    assert process.returncode == 0
    assert monitor.report("credit")["model"] == "credit"


def test_a_child_that_does_not_answer_is_killed_and_the_caller_told(
    monitor: Monitor, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    silent = [sys.executable, "-c", "import sys, time; sys.stdin.readline(); time.sleep(120)"]
    monkeypatch.setattr(monitor_module, "_CHILD", silent)
    monitor._reports.timeout = 0.5  # noqa: SLF001
    with pytest.raises(RuntimeError, match="did not answer in time"):
        monitor.report("credit")
    assert monitor._reports._process is None  # noqa: SLF001 -- killed, not left behind
    monkeypatch.undo()
    monitor._reports.timeout = 60  # noqa: SLF001
    assert monitor.report("credit")["model"] == "credit"  # the next request gets a working child
