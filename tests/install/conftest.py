"""A fresh virtual environment with modelport installed from its wheel, as a user would have it.

The wheel is built from a copy of the sources (pyproject.toml, README.md, src/), so that what it holds
is what the packaging declares, and installed into a new venv (no system site packages) with uv from
the package index. The venv is grown extra by extra (:meth:`FreshVenv.install`) rather than made anew
for each: one resolver run and one copy of numpy, pandas, pyarrow and onnxruntime for the whole module.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]


def uv() -> str:
    """The uv of the test environment (a dev dependency), else one on PATH."""
    beside = Path(sys.executable).with_name("uv")
    found = str(beside) if beside.exists() else shutil.which("uv")
    assert found, "uv is not installed: `make` installs it with the dev extra"
    return found


def build_wheel(into: Path) -> Path:
    """The wheel of a clean copy of the sources (no build/ or egg-info left in the checkout)."""
    source = into / "source"
    source.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    built = subprocess.run(
        [uv(), "build", "--quiet", "--wheel", "--out-dir", str(into / "dist"), str(source)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = (into / "dist").glob("modelport-*.whl")
    return wheel


@dataclass
class FreshVenv:
    root: Path
    wheel: Path
    home: Path
    work: Path  # the working directory of every command: not the checkout, whose files must not count
    extras: set[str] = field(default_factory=set)

    @property
    def bin(self) -> Path:
        return self.root / "bin"

    def env(self, **extra: str) -> dict[str, str]:
        """This machine's environment without anything that could reach past the venv: no
        PYTHON* variable (PYTHONPATH), no virtualenv of the test run, no MODELPORT_* setting but the
        home."""
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("MODELPORT_", "PYTHON", "VIRTUAL_ENV"))
        }
        env["PATH"] = os.pathsep.join([str(self.bin), env.get("PATH", "")])
        env["MODELPORT_HOME"] = str(self.home)
        return {**env, **extra}

    def install(self, *extras: str, also: tuple[str, ...] = ()) -> str:
        """Install the wheel with ``extras`` (and the requirements ``also``) as a user would: the newest
        releases the package index has that fit. Returns uv's report of what changed."""
        target = f"{self.wheel}[{','.join(sorted(extras))}]" if extras else str(self.wheel)
        done = subprocess.run(
            [uv(), "pip", "install", "--python", str(self.bin / "python"), target, *also],
            capture_output=True,
            text=True,
            timeout=900,
            env=self.env(),
        )
        assert done.returncode == 0, done.stderr
        self.extras.update(extras)
        return done.stderr

    def installed(self) -> dict[str, str]:
        """Distribution name (normalised) → version of everything in the venv."""
        listed = subprocess.run(
            [uv(), "pip", "list", "--python", str(self.bin / "python"), "--format", "json"],
            capture_output=True,
            text=True,
            timeout=120,
            env=self.env(),
        )
        assert listed.returncode == 0, listed.stderr
        return {re.sub(r"[-_.]+", "-", p["name"]).lower(): p["version"] for p in json.loads(listed.stdout)}

    def modelport(self, *args: str, timeout: float = 300, **env: str) -> subprocess.CompletedProcess[str]:
        """`modelport ARGS` from the venv's console script."""
        return subprocess.run(
            [str(self.bin / "modelport"), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.work,
            env=self.env(**env),
        )

    def python(self, code: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.bin / "python"), "-c", code, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.work,
            env=self.env(),
        )


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FreshVenv]:
    """A new venv holding modelport's core install only (grown by the tests that need extras)."""
    base = tmp_path_factory.mktemp("install")
    wheel = build_wheel(base / "wheel")
    root = base / "venv"
    made = subprocess.run(
        [uv(), "venv", "--quiet", "--python", sys.executable, str(root)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "UV_PYTHON_DOWNLOADS": "never"},
    )
    assert made.returncode == 0, made.stderr
    (base / "work").mkdir()
    venv = FreshVenv(root, wheel, base / "home", base / "work")
    venv.install()
    yield venv
