"""docs/first-hour.md, run end to end: the tutorial cannot rot.

The page marks what is run with an HTML comment on the line before a fenced block:

- ``<!-- run -->`` before a ``bash`` or ``python`` block: run it, in order, and fail on a non-zero exit;
- ``<!-- run: exit N -->``: run it and expect exit status N;
- ``<!-- run: background -->``: start it and leave it running (the server), waiting until it answers
  ``/v2/health/ready``; it is stopped at the end;
- ``<!-- output -->`` before a ``text`` block: what the run block before it prints. Each of its lines
  must be a whole line of that block's output (standard output or error), ``…`` matching anything.

Unmarked blocks (the install commands, illustrations) are shown, not run. The blocks run as a user
types them: in one working directory (``cd`` carries over), with what bash blocks ``export`` carried
to later blocks, from a copy of a clone's layout (``examples/`` beside the working directory), with the
project's environment first on ``PATH``. Bash blocks run in a new bash each; python blocks one after
another in one Python process, as in the notebook (or the ``python`` started in ``first-hour/``) the page
suggests, each in a namespace of its own, in the current directory and environment — what a block
imports is imported once for the whole page (pandas, scikit-learn, MLflow: seconds each in a new
process). Two things differ from a user's terminal: port 8080 becomes a free port, and the server's
drain period after SIGTERM is 0 (stopping stays quick). Keys are on: no block may use
``--insecure-dev``.
"""

from __future__ import annotations

import json
import os
import re
import select
import shlex
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import httpx

from tests.conftest import until
from tests.serving.conftest import free_port

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "first-hour.md"
_MARK = re.compile(r"<!--\s*(run(?::\s*(?P<option>[^>]*?))?|output)\s*-->")
_FENCE = re.compile(r"```(?P<lang>\w*)\s*$")


@dataclass
class Block:
    line: int  # where the block starts on the page, for messages
    lang: str  # bash | python
    code: str
    background: bool = False
    exit_code: int = 0
    expected: list[str] | None = None  # the output block's lines


def blocks(page: str) -> list[Block]:
    """The page's run blocks, each with the output block that follows it (if marked)."""
    lines = page.splitlines()
    found: list[Block] = []
    mark: re.Match[str] | None = None
    index = 0
    while index < len(lines):
        line = lines[index]
        fence = _FENCE.match(line)
        if fence is None:
            stripped = line.strip()
            if stripped:  # a marker applies to the very next line's block only
                mark = _MARK.fullmatch(stripped)
            index += 1
            continue
        end = next(i for i in range(index + 1, len(lines)) if lines[i].startswith("```"))
        body = lines[index + 1 : end]
        if mark is not None and mark.group(1) == "output":
            assert found and found[-1].expected is None, (
                f"line {index + 1}: an output block needs a run block"
            )
            assert fence["lang"] == "text", f"line {index + 1}: output blocks are ```text"
            found[-1].expected = [text for text in body if text.strip()]
        elif mark is not None:
            assert fence["lang"] in ("bash", "python"), f"line {index + 1}: run blocks are bash or python"
            option = (mark["option"] or "").strip()
            block = Block(index + 1, fence["lang"], "\n".join(body) + "\n")
            if option == "background":
                block.background = True
            elif option.startswith("exit "):
                block.exit_code = int(option.removeprefix("exit "))
            else:
                assert not option, f"line {index + 1}: unknown run option {option!r}"
            found.append(block)
        mark = None
        index = end + 1
    return found


def _pattern(expected: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in expected.strip().split("…")))


def _check_output(block: Block, output: str, port: int) -> None:
    printed = [line.strip() for line in output.splitlines()]
    for expected in block.expected or []:
        pattern = _pattern(expected.replace("8080", str(port)))
        assert any(pattern.fullmatch(line) for line in printed), (
            f"docs/first-hour.md line {block.line}: no output line matches {expected!r}; the block printed:\n"
            + output
        )


# The Python session of the python blocks: reads one block at a time (a JSON line: code, file name,
# directory, environment, output files) and answers with its exit status. Its standard output and error
# (file descriptors 1 and 2: what libraries and child processes write too) go to the block's files.
_KERNEL = r"""
import json, os, sys, traceback

replies = os.fdopen(os.dup(1), "w")
for line in sys.stdin:
    block = json.loads(line)
    os.chdir(block["cwd"])
    os.environ.clear()
    os.environ.update(block["env"])
    sys.argv = [block["file"]]
    sys.path[0] = os.path.dirname(block["file"])  # as `python FILE` has it
    saved = os.dup(1), os.dup(2)
    with open(block["stdout"], "wb") as out, open(block["stderr"], "wb") as err:
        os.dup2(out.fileno(), 1)
        os.dup2(err.fileno(), 2)
        status = 0
        try:
            with open(block["file"], encoding="utf-8") as source:
                code = compile(source.read(), block["file"], "exec")
            exec(code, {"__name__": "__main__", "__file__": block["file"], "__builtins__": __builtins__})
        except SystemExit as done:
            if isinstance(done.code, int) or done.code is None:
                status = done.code or 0
            else:
                print(done.code, file=sys.stderr)
                status = 1
        except BaseException:
            traceback.print_exc()
            status = 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
    replies.write(json.dumps(status) + "\n")
    replies.flush()
"""


class Python:
    """One Python process for the page's python blocks (see ``_KERNEL``)."""

    def __init__(self) -> None:
        self.process: subprocess.Popen[str] | None = None

    def run(self, script: Path, cwd: Path, env: dict[str, str], timeout: float) -> tuple[int, str, str]:
        if self.process is None:
            self.process = subprocess.Popen(
                [sys.executable, "-c", _KERNEL],
                cwd=cwd,
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
        assert self.process.stdin is not None and self.process.stdout is not None
        stdout, stderr = script.with_suffix(".out"), script.with_suffix(".err")
        order = {
            "file": str(script),
            "cwd": str(cwd),
            "env": env,
            "stdout": str(stdout),
            "stderr": str(stderr),
        }
        self.process.stdin.write(json.dumps(order) + "\n")
        self.process.stdin.flush()
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        assert ready, f"{script.name}: no answer within {timeout:g} s"
        reply = self.process.stdout.readline()
        assert reply, f"{script.name}: the Python session ended (exit status {self.process.wait()})"
        read = partial(Path.read_text, encoding="utf-8", errors="replace")
        return int(json.loads(reply)), read(stdout), read(stderr)

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()  # threads a block left behind (a client's pool) need not end first
            self.process.wait()
            for pipe in (self.process.stdin, self.process.stdout):
                if pipe is not None:
                    pipe.close()


class Session:
    """A user's terminal: a working directory and an environment that bash blocks may change."""

    def __init__(self, cwd: Path, scratch: Path, port: int) -> None:
        self.cwd = cwd
        self.scratch = scratch
        self.port = port
        self.env = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith(("MODELPORT_", "MLFLOW_", "PYTEST_"))
        }
        self.env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{self.env.get('PATH', '')}"
        self.server: subprocess.Popen[bytes] | None = None
        self.server_log = scratch / "server.log"
        self.python = Python()

    def _text(self, text: str) -> str:
        return text.replace("8080", str(self.port))

    def run(self, block: Block) -> str:
        code = self._text(block.code)
        if block.background:
            self._start(block, code)
            return ""
        if block.lang == "python":
            script = self.scratch / f"block-{block.line}.py"
            script.write_text(code, encoding="utf-8")
            status, stdout, stderr = self.python.run(script, self.cwd, self.env, timeout=300)
        else:
            # where the block ended and what it exported: the directory, then the environment, NUL-separated
            save = f"{{ pwd -P; env -0; }} > {shlex.quote(str(self.scratch / 'state'))}"
            command = ["bash", "-c", f"trap {shlex.quote(save)} EXIT\nset -euo pipefail\n{code}"]
            done = subprocess.run(
                command, cwd=self.cwd, env=self.env, capture_output=True, text=True, timeout=300
            )
            status, stdout, stderr = done.returncode, done.stdout, done.stderr
        output = stdout + stderr
        assert status == block.exit_code, (
            f"docs/first-hour.md line {block.line}: exit status {status}, expected {block.exit_code}:\n"
            f"{output}\n-- server log (end) --\n{self.log_tail()}"
        )
        if block.lang == "bash":
            cwd, _, exported = (
                (self.scratch / "state").read_bytes().decode(errors="surrogateescape").partition("\n")
            )
            self.cwd = Path(cwd)
            env = dict(entry.split("=", 1) for entry in exported.split("\0") if entry)
            self.env = {
                name: value for name, value in env.items() if name not in ("PWD", "OLDPWD", "SHLVL", "_")
            }
        if block.expected is not None:
            _check_output(block, output, self.port)
        return output

    def _start(self, block: Block, code: str) -> None:
        assert self.server is None, "one background block (the server)"
        log = self.server_log.open("ab")
        self.server = subprocess.Popen(
            ["bash", "-c", f"exec {code.strip()}"],
            cwd=self.cwd,
            env={**self.env, "MODELPORT_DRAIN_SECONDS": "0"},
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        log.close()

        def ready() -> bool:
            assert self.server is not None and self.server.poll() is None, (
                f"docs/first-hour.md line {block.line}: the server exited:\n{self.log_tail()}"
            )
            try:
                return probe.get(f"http://127.0.0.1:{self.port}/v2/health/ready").status_code == 200
            except httpx.TransportError:
                return False

        with httpx.Client(timeout=1) as probe:  # one client: each new one loads the CA bundle
            until(ready, timeout=60, interval=0.02)

    def log_tail(self) -> str:
        if not self.server_log.exists():
            return "(no server)"
        return "\n".join(self.server_log.read_text(encoding="utf-8", errors="replace").splitlines()[-20:])

    def stop(self) -> None:
        self.python.stop()
        if self.server is None:
            return
        os.killpg(self.server.pid, signal.SIGTERM)  # its own session: the server and its workers
        try:
            self.server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.server.pid, signal.SIGKILL)
            self.server.wait()


def test_the_page_marks_a_whole_tutorial() -> None:
    """The convention is read as intended: a server in the background, keys on, outputs checked."""
    found = blocks(PAGE.read_text(encoding="utf-8"))
    assert sum(block.background for block in found) == 1
    assert len(found) >= 15 and sum(block.expected is not None for block in found) >= 12
    assert not any("--insecure-dev" in block.code for block in found)
    assert {block.lang for block in found} == {"bash", "python"}
    assert any(block.exit_code == 6 for block in found)  # the promotion gate refuses an unvalidated canary


def test_first_hour_tutorial_runs_end_to_end(tmp_path: Path) -> None:
    assert shutil.which("curl"), "the tutorial calls the server with curl"
    clone = tmp_path / "clone"  # what the tutorial needs of a clone of the repository
    clone.mkdir()
    (clone / "examples").symlink_to(ROOT / "examples", target_is_directory=True)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    session = Session(clone, scratch, free_port())
    try:
        for block in blocks(PAGE.read_text(encoding="utf-8")):
            session.run(block)
    finally:
        session.stop()
    assert session.cwd == clone / "first-hour"
