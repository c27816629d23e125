"""Registration of an uploaded model file, in a child process with CPU, memory and time limits.

``POST /api/v1/models/{name}/versions`` (serving/upload.py) streams the model file and its sample to a
private folder under ``HOME/run/uploads``; this module registers them *outside the serving worker*: a
child (``python -m modelport.registry.upload``) gets a JSON job on standard input, limits itself
(RLIMIT_CPU, RLIMIT_AS), opens the same registry and calls :meth:`Registry.register` — the same
intake as local registration: archive checks, the preflight child (which limits itself again), the
conversion to ONNX, the equivalence proof and one committing transaction, so a failure anywhere leaves
nothing behind. Its answer is one JSON line. Pickles are never registered this way (no
``trust_pickle``): the server does not run code it was sent.

The worker only waits for the child (in a thread); a child past ``wall_seconds`` is killed. Nothing
the child reads or builds comes back but the version's record.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelport import errors
from modelport.errors import ModelportError

__all__ = ["RegistrationLimits", "register_in_child"]

_MEMORY_EXIT = 86


@dataclass(frozen=True, slots=True)
class RegistrationLimits:
    cpu_seconds: int = 600
    memory_bytes: int = 8 << 30
    wall_seconds: float = 900.0


def register_in_child(
    job: dict[str, Any], limits: RegistrationLimits = RegistrationLimits()
) -> dict[str, Any]:
    """Register what ``job`` describes in a limited child; return the new version's record (a dict) or
    raise the child's refusal as the same error class (anything unexpected: a RuntimeError)."""
    command = [
        sys.executable,
        "-m",
        "modelport.registry.upload",
        str(limits.cpu_seconds),
        str(limits.memory_bytes),
    ]
    # its own process group: a timeout kills the child and the preflight child it started
    process = subprocess.Popen(
        command,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=job["folder"],
        start_new_session=True,
    )
    try:
        # the database URL on a pipe, never on the command line
        stdout, _ = process.communicate(json.dumps(job).encode(), timeout=limits.wall_seconds)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise errors.UnsafeFormat(
            f"registration was still running after {limits.wall_seconds:g} s (a hang, or a model too "
            "large to convert here): refused, nothing was stored"
        ) from None
    done = subprocess.CompletedProcess(command, process.returncode, stdout, b"")
    lines = done.stdout.decode(errors="replace").strip().splitlines()
    if done.returncode == _MEMORY_EXIT or done.returncode < 0:
        what = "memory" if done.returncode == _MEMORY_EXIT else f"signal {-done.returncode}"
        raise errors.UnsafeFormat(f"registration stopped ({what} limit reached): refused, nothing was stored")
    try:
        answer = json.loads(lines[-1]) if lines else {}
    except ValueError:
        answer = {}
    if "version" in answer:
        return dict(answer["version"])
    kind = getattr(errors, str(answer.get("error", "")), None)
    if isinstance(kind, type) and issubclass(kind, ModelportError):
        raise kind(str(answer.get("message", ""))[:2000])
    raise RuntimeError(f"registration failed in its child process (exit {done.returncode})")


def _child(argv: list[str]) -> int:
    import resource

    cpu, memory = int(argv[0]), int(argv[1])
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 5))
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    with contextlib.suppress(OSError):
        os.nice(5)  # serving comes first
    try:
        job = json.loads(sys.stdin.buffer.read())
        from modelport.app import open_registry
        from modelport.settings import Settings

        settings = Settings(home=Path(job["home"]), database_url=job["database_url"])
        registry = open_registry(settings)
        try:
            version = registry.register(
                name=job["name"],
                path=Path(job["model"]),
                format=job["format"],
                sample=Path(job["sample"]),
                alias=job.get("alias"),
                description=job.get("description", ""),
                tags=job.get("tags") or None,
                params=job.get("params") or None,
                metrics=job.get("metrics") or None,
                target=job.get("target"),
                require_onnx=bool(job.get("require_onnx")),
                creator=job["actor"],
            )
            if job.get("label"):
                registry.store.releases.set_label(
                    job["name"], version.number, job["label"], actor=job["actor"]
                )
                version = registry.get(f"{job['name']}@{version.number}")
        finally:
            registry.close()
        print(json.dumps({"version": version.to_dict(full=False) | {"conversion": version.conversion}}))
        return 0
    except MemoryError:
        return _MEMORY_EXIT
    except ModelportError as exc:  # the client's file or form: said to the client, by class
        print(json.dumps({"error": type(exc).__name__, "message": str(exc)}))
        return 1
    except Exception as exc:  # the type only: no paths, no URL
        print(json.dumps({"error": "Unexpected", "message": type(exc).__name__}))
        return 1


if __name__ == "__main__":
    raise SystemExit(_child(sys.argv[1:]))
