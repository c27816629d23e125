"""Smoke-run a built image (``make image`` calls it), twice, as the image's own user (uid 10001):

1. **In a buildah working container**: ``modelport init`` (its admin key), ``register`` a small ONNX
   model made here on the host (the image has no converters) with its sample, ``serve``; the image's
   own HEALTHCHECK command, run in the container; one request without a key (401) and one with the
   admin key (200, the labels the model gives); SIGTERM to the server process, as a container runtime
   signals a container's first process: readiness fails at once while requests are still answered (the
   drain), then it exits by itself.
2. **As deploy/k8s runs it**: the same image tree mounted read-only (``readOnlyRootFilesystem``),
   with an empty, root-owned, world-writable tmpfs as the home and another as /tmp (what an
   ``emptyDir`` looks like to the pod), in a mount namespace of its own: init, register, serve,
   the same requests, SIGTERM. A write anywhere else fails the run.

Every wait has a deadline; containers, mounts and the scratch folder go whatever happens. Needs root
(buildah's vfs storage, unshare).

    python deploy/image/smoke.py IMAGE        (BUILDAH: the buildah command, default with vfs storage)
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shlex
import signal
import socket
import string
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression

from modelport.runtimes.convert import to_onnx
from modelport.signature import Outputs, Signature

BUILDAH = shlex.split(os.environ.get("BUILDAH", "buildah --storage-driver vfs"))
USER = "10001:10001"  # deploy/Containerfile's user, and deploy/k8s's runAsUser
FEATURES = ["revenue", "debt", "margin", "age"]
CLASSES = ["A", "B", "C"]
START_SECONDS = 120  # a cold start on a busy 2-core machine: imports, the registry, the first load
STOP_SECONDS = 60  # the drain (MODELPORT_DRAIN_SECONDS, 5 s by default) and the last flushes

# Phase 2, as root in a new mount namespace: the image tree read-only, tmpfs home and /tmp, the
# model files bound in; then, as the image's user, init + register and exec the server.
READ_ONLY = r"""
set -eu
root=$1 files=$2 port=$3
mount --make-rprivate /
mount --bind "$root" "$root"
mount -o remount,bind,ro "$root"
mount -t tmpfs -o size=512m,mode=0777 home "$root/var/lib/modelport"
mount -t tmpfs -o size=64m,mode=1777 tmp "$root/tmp"
mkdir "$root/tmp/smoke"
mount --bind "$files" "$root/tmp/smoke"
mount --rbind /proc "$root/proc"
mount --rbind /dev "$root/dev"
if touch "$root/usr/written" 2>/dev/null; then echo "the root is writable" >&2; exit 1; fi
exec chroot --userspec=10001:10001 "$root" /usr/bin/env -i PATH=/opt/modelport/bin:/usr/bin:/bin \
    MODELPORT_HOME=/var/lib/modelport PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 /bin/sh -c '
        set -e
        modelport init --admin-key-file /tmp/smoke/admin-token --json >/tmp/smoke/init.json
        modelport register smoke /tmp/smoke/model.onnx --sample /tmp/smoke/sample.csv --target label \
            --alias production --json >/tmp/smoke/register.json
        exec modelport serve --host 127.0.0.1 --port "$0"' "$port"
"""


def say(text: str) -> None:
    print(f"smoke: {text}", flush=True)


@dataclass(frozen=True)
class Case:
    """The model's files in ``folder``, one V2 request for three of its rows, the labels it gives."""

    folder: Path
    body: bytes
    labels: list[str]


def make_case(folder: Path) -> Case:
    """A seeded logistic regression on four features as ONNX, and its sample (label included)."""
    rng = np.random.default_rng(16)
    data = pd.DataFrame(rng.normal(size=(300, len(FEATURES))), columns=FEATURES)
    score = data["revenue"] - data["debt"] + 0.5 * data["margin"]
    data["label"] = np.select([score > 0.5, score > -0.5], ["A", "B"], "C")
    model = LogisticRegression(max_iter=500).fit(data[FEATURES], data["label"])
    signature = Signature(Signature.infer_features(data[FEATURES]), Outputs("classification", CLASSES))
    folder.mkdir(mode=0o777)
    folder.chmod(0o777)  # phase 2's user writes its init and register answers here
    (folder / "model.onnx").write_bytes(to_onnx("sklearn", model, signature))
    data.to_csv(folder / "sample.csv", index=False)
    rows = data[FEATURES].head(3)
    tensor = {"name": "input", "shape": list(rows.shape), "datatype": "FP64"}
    request = {"inputs": [{**tensor, "data": rows.to_numpy().ravel().tolist()}]}
    return Case(folder, json.dumps(request).encode(), [str(label) for label in model.predict(rows)])


def free_port() -> int:
    # Both phases share the host's network: a free loopback port keeps clear of anything else here.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def call(url: str, body: bytes | None = None, token: str | None = None) -> tuple[int, bytes]:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, body, headers)  # noqa: S310 (http://127.0.0.1 only)
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
            return int(answer.status), answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def until(what: str, done: Callable[[], bool], seconds: float, alive: Callable[[], bool]) -> float:
    """Poll ``done`` until it holds (the seconds it took); fail at the deadline or when ``alive`` stops
    holding (no point waiting for a server that exited)."""
    start = time.monotonic()
    while not done():
        if not alive():
            raise SystemExit(f"smoke: the server exited while waiting: {what}")
        if time.monotonic() - start > seconds:
            raise SystemExit(f"smoke: not within {seconds:.0f} s: {what}")
        time.sleep(0.05)
    return time.monotonic() - start


def ready(url: str) -> bool:
    try:
        return call(f"{url}/v2/health/ready")[0] == 200
    except OSError:
        return False


def server_process(root: int) -> int:
    """The Python process of ``modelport serve`` below ``root`` (buildah, or unshare), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                stat = Path(f"/proc/{entry}/stat").read_text()
                children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry))
    pending = [root]
    while pending:
        pid = pending.pop()
        with contextlib.suppress(OSError):
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if b"serve" in argv and Path(argv[0].decode()).name.startswith("python"):
                return pid
        pending.extend(children.get(pid, []))
    raise SystemExit("smoke: no modelport serve process found")


@contextlib.contextmanager
def running(argv: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``argv`` in the background, its output in ``log``; killed if still running at the end."""
    with log.open("wb") as output:
        process = subprocess.Popen(argv, stdout=output, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)


def exercise(
    server: subprocess.Popen[bytes],
    log: Path,
    port: int,
    token: Callable[[], str],
    case: Case,
    when_ready: Callable[[], None] = lambda: None,
) -> None:
    """Wait until ready (then ``when_ready``); 401 without a key, 200 and the right labels with it;
    SIGTERM: not ready at once, still answering, then gone by itself."""
    url = f"http://127.0.0.1:{port}"

    def alive() -> bool:
        return server.poll() is None

    took = until("ready", lambda: ready(url), START_SECONDS, alive)
    say(f"  serve: ready {took:.1f} s after start, on {url}")
    when_ready()
    secret = token()
    status, _ = call(f"{url}/v2/models/smoke/infer", case.body)
    assert status == 401, f"no key: {status}, not 401"
    status, answer = call(f"{url}/v2/models/smoke/infer", case.body, secret)
    assert status == 200, f"with the key: {status} {answer!r}"
    outputs = json.loads(answer)
    labels = next(o["data"] for o in outputs["outputs"] if o["name"] == "label")
    assert labels == case.labels, f"labels {labels}, expected {case.labels}"
    served = f"{outputs['model_name']} v{outputs['model_version']} {labels}"
    say(f"  infer: 401 without a key; 200 with it: {served}")

    os.kill(server_process(server.pid), signal.SIGTERM)
    signalled = time.monotonic()
    failed = until(
        "readiness fails after SIGTERM", lambda: call(f"{url}/v2/health/ready")[0] == 503, 30, alive
    )
    status, _ = call(f"{url}/v2/models/smoke/infer", case.body, secret)
    assert status == 200, f"during the drain: {status}"
    until("exit after SIGTERM", lambda: not alive(), STOP_SECONDS, lambda: True)
    stopped = time.monotonic() - signalled
    # uvicorn ends a graceful shutdown by raising the signal again: the server dies of its SIGTERM,
    # which buildah reports as status 1 ("exited on terminated") and unshare as -15.
    logged = log.read_text()
    if server.returncode not in (0, 1, -signal.SIGTERM) or "Traceback" in logged or "Read-only" in logged:
        raise SystemExit(f"smoke: the server ended with {server.returncode} after {stopped:.1f} s:\n{logged}")
    say(f"  SIGTERM: not ready after {failed:.2f} s, still answering (200); stopped after {stopped:.1f} s")


def in_buildah(image: str, case: Case, scratch: Path) -> None:
    name = f"modelport-smoke-{os.getpid()}"
    files = "/var/lib/modelport/smoke"
    subprocess.run(
        [*BUILDAH, "from", "--quiet", "--pull=false", "--name", name, image],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    try:

        def run(*argv: str) -> str:
            command = [*BUILDAH, "run", "--isolation", "chroot", name, "--", *argv]
            return subprocess.run(command, check=True, capture_output=True, text=True, timeout=300).stdout

        copy = [*BUILDAH, "copy", "--quiet", "--chown", USER, name, str(case.folder), files]
        subprocess.run(copy, check=True, stdout=subprocess.DEVNULL)
        say(f"1. buildah run: uid {run('id', '-u').strip()}, {run('modelport', '--version').strip()}")
        token = json.loads(run("modelport", "init", "--json"))["admin_key"]["token"]
        say(f"  init: registry created, admin key {'_'.join(token.split('_')[:2])}_…")
        register = ["register", "smoke", f"{files}/model.onnx", "--sample", f"{files}/sample.csv"]
        version = json.loads(
            run("modelport", *register, "--target", "label", "--alias", "production", "--json")
        )
        registered = (
            f"{version['model']} v{version['number']} {version['serving_format']} {version['status']}"
        )
        say(f"  register: {registered}")

        port = free_port()
        serve = ["modelport", "serve", "--host", "127.0.0.1", "--port", str(port)]
        log = scratch / "serve-buildah.log"

        def healthcheck() -> None:
            """The image's own HEALTHCHECK command, in the container, against this run's port."""
            inspect = [*BUILDAH, "inspect", "--type", "image", image]
            config = json.loads(subprocess.run(inspect, check=True, capture_output=True, text=True).stdout)
            kind, *check = config["Docker"]["config"]["Healthcheck"]["Test"]
            assert kind == "CMD", check
            run(*(part.replace("127.0.0.1:8080", f"127.0.0.1:{port}") for part in check))
            say("  HEALTHCHECK: healthy")

        with running([*BUILDAH, "run", "--isolation", "chroot", name, "--", *serve], log) as server:
            exercise(server, log, port, lambda: token, case, healthcheck)
    finally:
        subprocess.run([*BUILDAH, "rm", name], stdout=subprocess.DEVNULL, check=False)


def as_kubernetes(image: str, case: Case, scratch: Path) -> None:
    name = f"modelport-smoke-ro-{os.getpid()}"
    subprocess.run(
        [*BUILDAH, "from", "--quiet", "--pull=false", "--name", name, image],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    try:
        root = subprocess.run(
            [*BUILDAH, "mount", name], check=True, capture_output=True, text=True
        ).stdout.strip()
        say("2. read-only root, tmpfs home and /tmp (emptyDirs), uid 10001, own mount namespace")
        port = free_port()
        log = scratch / "serve-read-only.log"
        argv = [
            "unshare",
            "--mount",
            "--fork",
            "sh",
            "-c",
            READ_ONLY,
            "sh",
            root,
            str(case.folder),
            str(port),
        ]

        # as the Kubernetes init Job does: the first admin key is an operator-made token (a Secret)
        given = "mpk_" + "".join(secrets.choice(string.ascii_lowercase) for _ in range(12))
        given += "_" + secrets.token_urlsafe(32)
        (case.folder / "admin-token").write_text(given + "\n")
        (case.folder / "admin-token").chmod(0o644)

        def token() -> str:  # init adopted it before the server started: it never prints it
            adopted = json.loads((case.folder / "init.json").read_text())["admin_key"]
            assert "token" not in adopted and adopted["key"]["id"] == given.split("_")[1], adopted
            return given

        with running(argv, log) as server:
            exercise(server, log, port, token, case)
        version = json.loads((case.folder / "register.json").read_text())
        registered = f"v{version['number']} {version['serving_format']}"
        say(f"  init --admin-key-file, register ({registered}) and serve: all on a read-only root")
    finally:
        subprocess.run([*BUILDAH, "umount", name], stdout=subprocess.DEVNULL, check=False)
        subprocess.run([*BUILDAH, "rm", name], stdout=subprocess.DEVNULL, check=False)


def main(image: str) -> None:
    with tempfile.TemporaryDirectory(prefix="modelport-smoke-") as folder:
        scratch = Path(folder)
        case = make_case(scratch / "files")
        in_buildah(image, case, scratch)
        as_kubernetes(image, case, scratch)
    say("passed")


if __name__ == "__main__":
    main(sys.argv[1])
