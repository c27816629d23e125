"""Read an untrusted model file in a child process first, so that a crash there is a refusal.

The libraries behind the safe formats parse and walk a model in C/C++ that trusts the file: a
LightGBM text model whose ``tree_sizes`` header lies makes LightGBM ``abort()``, crafted tree arrays
make XGBoost or scikit-learn read out of bounds (SIGSEGV) or loop forever without the GIL.
``trees.py`` refuses the tree shapes we know of; this module catches what it does not know: before
the registering process touches the bytes, a child (``python -m modelport.registry.preflight``)

1. reads them with the same readers as registration (``intake.read_bytes``: tree checks included),
2. scores probe rows (zeros, ±1, ±3e38 in each feature, NaN) with the native runtime,
3. converts the model to ONNX and scores the probe rows with the twin,

under a CPU-time limit (RLIMIT_CPU: SIGXCPU), an address-space limit (RLIMIT_AS: MemoryError) and a
wall-clock timeout, with one thread per library and an empty working directory. A child that dies by
a signal, runs out of time or memory, is refused with :class:`UnsafeFormat`; a child that refuses the
file itself (unknown format, unsafe tree …) is re-raised here as the same kind of error. Errors of
the probes (a pipeline that wants text columns, a model that refuses NaN) are expected and ignored:
only whether the process survives them matters. Nothing the child unpickles or rebuilds crosses back;
its answer is one line of JSON on a private file descriptor.

Pickles are not sent here: they run code by design, only in the registering process and only after
``--trust-pickle``; running them twice would run their code twice.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelport import errors
from modelport.errors import ModelportError, UnsafeFormat, brief

__all__ = ["LIMITS", "Limits", "check_in_child", "refusal"]

_MEMORY_EXIT = 86  # the child's exit status when it ran out of memory (MemoryError)
_PROBE_FEATURES = 32  # features probed one by one at ±3e38; wider models get the all-feature rows
_EXTREME = 3e38  # within float32, so the ONNX twin sees the same value
_ERRORS: dict[str, type[ModelportError]] = {
    cls.__name__: cls
    for cls in (
        errors.InvalidInput,
        errors.UnknownFormat,
        errors.UnsafeFormat,
        errors.SampleMismatch,
        errors.ConversionFailed,
        errors.RuntimeFailure,
        errors.MissingExtra,
    )
}


@dataclass(frozen=True, slots=True)
class Limits:
    """What one preflight child may use. The defaults leave room for forests of thousands of trees."""

    cpu_seconds: int = 300
    memory_bytes: int = 8 << 30
    wall_seconds: float = 600.0


LIMITS = Limits()


def check_in_child(data: bytes, fmt: str, name: str, limits: Limits = LIMITS) -> dict[str, Any]:
    """Run the preflight of ``data`` (a model file of format ``fmt``, called ``name`` in messages) in
    a child process; return its report, or raise the child's refusal or :class:`UnsafeFormat`."""
    _refuse_pickle(fmt)
    command = [
        sys.executable,
        "-m",
        "modelport.registry.preflight",
        fmt,
        name,
        str(limits.cpu_seconds),
        str(limits.memory_bytes),
    ]
    # One thread per library: CPU time is counted across threads, and idle pools cost address space.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    with tempfile.TemporaryDirectory(prefix="modelport-preflight-") as empty:
        try:
            done = subprocess.run(
                command,
                input=data,
                capture_output=True,
                timeout=limits.wall_seconds,
                check=False,
                cwd=empty,
                env=env,
            )
        except subprocess.TimeoutExpired:
            raise UnsafeFormat(
                f"{name!r} was still being read, converted or scored after {limits.wall_seconds:g} s "
                "(a hang, e.g. a cyclic tree): refused"
            ) from None
    return refusal_or_report(done.returncode, done.stdout, done.stderr, name, limits)


def refusal(returncode: int, name: str, limits: Limits) -> UnsafeFormat:
    """The error for a child that did not finish on its own (``returncode`` as subprocess reports it:
    ``-N`` for signal N)."""
    if returncode == _MEMORY_EXIT:
        return UnsafeFormat(
            f"{name!r} needed more than {limits.memory_bytes / (1 << 30):g} GiB of memory while being "
            "read, converted or scored: refused"
        )
    if returncode < 0:
        try:
            signame = signal.Signals(-returncode).name
        except ValueError:
            signame = f"signal {-returncode}"
        if signame == "SIGXCPU":
            return UnsafeFormat(
                f"{name!r} used more than {limits.cpu_seconds} s of CPU time (SIGXCPU) while being read, "
                "converted or scored (a hang, e.g. a cyclic tree): refused"
            )
        return UnsafeFormat(
            f"{name!r} crashed the model library ({signame}) while being read, converted or scored: refused"
        )
    return UnsafeFormat(
        f"{name!r} could not be checked: the preflight process exited with status {returncode}"
    )


def refusal_or_report(
    returncode: int, stdout: bytes, stderr: bytes, name: str, limits: Limits
) -> dict[str, Any]:
    if returncode != 0:
        error = refusal(returncode, name, limits)
        if returncode > 0 and returncode != _MEMORY_EXIT:
            lines = stderr.decode("utf-8", "replace").strip().splitlines()
            if lines:
                error = UnsafeFormat(f"{error}: {brief(Exception(lines[-1]))}")
        raise error
    try:
        answer = json.loads(stdout.decode("utf-8").strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise UnsafeFormat(f"{name!r} could not be checked: the preflight process gave no answer") from None
    if not answer.get("ok"):
        raise _ERRORS.get(str(answer.get("kind")), errors.UnknownFormat)(str(answer.get("message")))
    return dict(answer.get("report", {}))


# -- the child ------------------------------------------------------------------------------------


def _limit(cpu_seconds: int, memory_bytes: int) -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 5))
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))


def _probe_frame(names: list[str]) -> Any:
    import numpy as np
    import pandas as pd

    n = len(names)
    rows = [np.zeros(n), np.ones(n), -np.ones(n), np.full(n, _EXTREME), np.full(n, -_EXTREME)]
    for index in range(min(n, _PROBE_FEATURES)):
        for value in (_EXTREME, -_EXTREME):
            row = np.zeros(n)
            row[index] = value
            rows.append(row)
    return pd.DataFrame(np.vstack(rows), columns=names)


def _score(runtime: Any, signature: Any, frame: Any) -> str:
    try:
        runtime.predict(signature.batch(frame))
    except Exception as exc:  # expected for some models: only survival matters here
        return f"{type(exc).__name__}: {brief(exc)}"
    return "ok"


def inspect(data: bytes, fmt: str, name: str) -> dict[str, Any]:
    """Read, score, convert and score again (run in the child: this may crash)."""
    _refuse_pickle(fmt)
    import numpy as np

    from modelport.registry.intake import read_bytes
    from modelport.registry.registration import twin_details
    from modelport.runtimes.base import load_runtime
    from modelport.runtimes.convert import to_onnx
    from modelport.signature import Outputs, Signature

    native = read_bytes(data, Path(name), fmt)
    width = native.n_features if native.feature_names is None else len(native.feature_names)
    report: dict[str, Any] = {"kind": native.kind}
    if not width:
        report["scored"] = "skipped: the model does not state its feature count"
        return report
    names = native.feature_names or [f"f{i}" for i in range(width)]
    frame = _probe_frame(names)
    missing = frame.head(1).copy()
    missing.iloc[0, :] = np.nan
    signature = Signature(Signature.infer_features(frame), Outputs(native.task, list(native.classes)))  # type: ignore[arg-type]
    try:
        runtime = load_runtime(native.format, native.blob, native.details, signature)
    except ModelportError as exc:  # e.g. ONNX inputs named unlike the probe: registration will say
        report["loaded"] = str(exc)
        return report
    report["scored"] = _score(runtime, signature, frame)
    report["scored_missing"] = _score(runtime, signature, missing)
    runtime.close()
    if native.kind == "onnx":
        return report
    try:
        twin = load_runtime(
            "onnx", to_onnx(native.kind, native.model, signature), twin_details(native), signature
        )
    except ModelportError as exc:
        report["converted"] = str(exc)
        return report
    report["converted"] = "ok"
    report["twin_scored"] = _score(twin, signature, frame)
    twin.close()
    return report


def _refuse_pickle(fmt: str) -> None:
    """A pickle runs code when read: it is read only by ``intake.from_file`` after ``trust_pickle``,
    in the registering process, never here (where limits would not make running it safe)."""
    if fmt == "pickle":
        raise UnsafeFormat("pickles are never read by the preflight: they run code when loaded")


def main(argv: list[str]) -> int:
    fmt, name, cpu_seconds, memory_bytes = argv
    _limit(int(cpu_seconds), int(memory_bytes))
    # The answer goes to a private copy of stdout; fd 1 itself is pointed at stderr, so nothing a
    # library prints (LightGBM writes to stdout) can be mistaken for it.
    answer = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    data = sys.stdin.buffer.read()
    try:
        result: dict[str, Any] = {"ok": True, "report": inspect(data, fmt, name)}
    except MemoryError:
        return _MEMORY_EXIT
    except ModelportError as exc:
        result = {"ok": False, "kind": type(exc).__name__, "message": str(exc)}
    answer.write(json.dumps(result) + "\n")
    answer.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
