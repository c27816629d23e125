"""The HAProxy configuration shipped in deploy/haproxy is valid and carries the tested directives."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tests.scaleout.balancer import FULL_RETRY, SCORING_ONLY, haproxy

SHIPPED = Path(__file__).resolve().parents[2] / "deploy" / "haproxy" / "haproxy.cfg"


def _haproxy() -> str:
    binary = haproxy()
    assert binary, "HAProxy is not installed: `make tools` installs it"
    return binary


def _directives(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


def test_the_shipped_configuration_is_valid() -> None:
    checked = subprocess.run(
        [_haproxy(), "-c", "-f", str(SHIPPED)], capture_output=True, text=True, timeout=30
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_shipped_configuration_health_checks_readiness_and_retries_as_tested() -> None:
    directives = _directives(SHIPPED.read_text())
    assert f"retry-on {FULL_RETRY}" in directives and "503" not in FULL_RETRY
    assert SCORING_ONLY in directives  # a committed management write is never resent
    for line in ("option redispatch 1", "option http-buffer-request", "option httpchk", "balance roundrobin"):
        assert line in directives
    (check,) = [d for d in directives if d.startswith("http-check send")]
    assert "uri /v2/health/ready" in check
    # out of rotation well inside the default 5 s drain: inter x fall
    (server,) = [d for d in directives if d.startswith("default-server")]
    inter = re.search(r"inter (\d+)ms", server)
    fall = re.search(r"fall (\d+)", server)
    assert inter and fall and int(inter.group(1)) * int(fall.group(1)) <= 2000


def test_a_broken_configuration_is_refused(tmp_path: Path) -> None:
    broken = tmp_path / "haproxy.cfg"
    broken.write_text(SHIPPED.read_text().replace("retry-on conn-failure", "retry-on conn-failures"))
    checked = subprocess.run(
        [_haproxy(), "-c", "-f", str(broken)], capture_output=True, text=True, timeout=30
    )
    assert checked.returncode != 0
