"""The scoring process: runtimes that cannot be stopped from outside score in a child of the worker.

scikit-learn (through skops), XGBoost and LightGBM run their loops in compiled code that no flag can
interrupt; a crafted or runaway model would hold a worker thread — or, inline, the whole worker — for
good. Their batches therefore go over pipes to a child process that loads the same digest-verified
version from the registry and scores it; when a call passes its deadline the worker kills the child
(SIGKILL) and starts a new one for the next call. A crash of the child (a segmentation fault in a
native library) fails only the calls it was scoring.

Frames are the shadow scorer's (``serving/shadow_scorer.py``): a JSON header plus raw array bytes;
nothing is unpickled on either side, and the database URL goes through the pipe, never argv. One call
at a time per child: native runtimes score a merged batch per call already.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from modelport.errors import InputMismatch, ModelportError, RuntimeFailure, ScoringTimeout
from modelport.runtimes.base import Prediction
from modelport.serving.shadow_scorer import FRAME, decode_arrays, encode, read_frame, start_child

if TYPE_CHECKING:
    from modelport.registry.service import LoadedVersion, Registry
    from modelport.signature import Batch

__all__ = ["ScoringProcess"]

log = logging.getLogger("modelport.serving")

MAX_LOADED = 8  # versions one scoring process keeps loaded
_ERRORS: dict[str, type[ModelportError]] = {"InputMismatch": InputMismatch, "RuntimeFailure": RuntimeFailure}


class ScoringProcess:
    """The worker's side: one child, started on first use and replaced after a kill or a crash.

    Each exchange runs in a task of its own, so a request that gives up (its own timeout, a client
    that left) never leaves the pipe half-read. Loading a version into the child has its own, longer
    deadline (``load_timeout``) and does not count as a hang: only the scoring call itself is held to
    the request timeout."""

    def __init__(self, config: dict[str, Any], load_timeout: float = 120.0) -> None:
        self._config = config
        self.load_timeout = load_timeout
        self._process: asyncio.subprocess.Process | None = None
        self._loaded: dict[tuple[str, int], LoadedVersion] = {}  # versions the current child holds
        self._lock: asyncio.Lock | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.started = 0  # children started (a replaced child counts again)
        self.killed = 0
        self._closing = False

    def prepare(self, loaded: LoadedVersion) -> asyncio.Task[Any]:
        """Load ``loaded`` into the child in the background, before its first request needs it."""
        return self._spawn(self._exchange(loaded, None, 0.0))

    async def score(self, loaded: LoadedVersion, batch: Batch, timeout: float) -> Prediction:
        task = self._spawn(self._exchange(loaded, batch, timeout))
        return await asyncio.shield(task)

    def _spawn(self, work: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: a background load that failed is not an unhandled error

    async def _exchange(
        self, loaded: LoadedVersion, batch: Batch | None, timeout: float
    ) -> Prediction | None:
        if self._lock is None:
            self._lock = asyncio.Lock()
        version = loaded.version
        key = (version.model, version.number)
        async with self._lock:
            if key not in self._loaded or self._process is None or self._process.returncode is not None:
                header = {"op": "load", "model": version.model, "version": version.number}
                reply, _ = await self._call(encode(header, []), self.load_timeout, version.ref)
                if "error" in reply:
                    raise _error(reply)
                self._loaded[key] = loaded
            if batch is None:
                return None
            names = loaded.signature.names
            frame = encode(
                {"op": "score", "model": version.model, "version": version.number, "names": names},
                [np.asarray(batch[name]) for name in names],
            )
            reply, arrays = await self._call(frame, timeout, version.ref)
        if "error" in reply:
            raise _error(reply)
        return _prediction(reply, arrays, loaded)

    async def _call(self, frame: bytes, timeout: float, ref: str) -> tuple[dict[str, Any], list[np.ndarray]]:
        process = await self._child()
        assert process.stdin is not None and process.stdout is not None
        try:
            async with asyncio.timeout(timeout):
                process.stdin.write(frame)
                await process.stdin.drain()
                head = await process.stdout.readexactly(FRAME.size)
                size, length = FRAME.unpack(head)
                header = _json(await process.stdout.readexactly(size))
                payload = await process.stdout.readexactly(length) if length else b""
        except TimeoutError:
            self._kill()
            raise ScoringTimeout(f"{ref} did not answer within {timeout:g} s") from None
        except (asyncio.IncompleteReadError, ConnectionError):
            self._kill()
            raise RuntimeFailure(f"{ref} crashed its scoring process; it is restarted") from None
        except BaseException:
            self._kill()  # cancelled mid-exchange (shutdown): the pipe is out of step
            raise
        return header, decode_arrays(header, payload)

    async def _child(self) -> asyncio.subprocess.Process:
        process = self._process
        if process is not None and process.returncode is None:
            return process
        self._loaded.clear()
        process = await start_child("modelport.serving.isolated", self._config)
        self._process = process
        self.started += 1
        return process

    def _kill(self) -> None:
        """Kill the child and start its replacement at once, loading what it held: the next request
        should not pay for a cold start."""
        process, self._process = self._process, None
        held, self._loaded = list(self._loaded.values()), {}
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            self.killed += 1
            # reap it in the background: a killed child must not stay a zombie
            self._spawn(process.wait())
        if not self._closing:
            for loaded in held:
                self.prepare(loaded)

    async def close(self) -> None:
        self._closing = True
        for task in list(self._tasks):
            task.cancel()
        process, self._process = self._process, None
        if process is None or process.returncode is not None:
            return
        if process.stdin is not None:
            process.stdin.close()
        try:
            await asyncio.wait_for(process.wait(), 5)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()


def _error(reply: dict[str, Any]) -> ModelportError:
    error = _ERRORS.get(str(reply["error"]), RuntimeFailure)
    return error(str(reply.get("message", "the model failed"))[:500])


def _json(text: bytes) -> dict[str, Any]:
    import json

    value = json.loads(text)
    return value if isinstance(value, dict) else {"error": "RuntimeFailure", "message": "bad reply"}


def _prediction(header: dict[str, Any], arrays: list[np.ndarray], loaded: LoadedVersion) -> Prediction:
    """The child's reply as a :class:`Prediction` of ``loaded``."""
    parts = dict(zip(header.get("outputs", []), arrays, strict=False))
    labels = parts.get("labels")
    if labels is not None:
        # labels travel as text; give them back as the signature's class values (ints stay ints)
        by_text = {str(c): c for c in loaded.signature.outputs.classes}
        labels = np.array([by_text.get(str(v), v) for v in labels.tolist()], dtype=object)
    return Prediction(labels=labels, probabilities=parts.get("probabilities"), values=parts.get("values"))


# -- the child --------------------------------------------------------------------------------------


def _child() -> int:
    """Entry of the scoring process: frames on standard input, replies on (a private copy of) standard
    output; anything a library prints goes to standard error instead of into the frames."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s scoring process: %(message)s")
    replies = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)
    with open(0, "rb", buffering=0, closefd=False) as source:
        return _serve(source.read, replies)


def _serve(read: Any, sink: Any) -> int:
    first = read_frame(read)
    if first is None or first[0].get("op") != "config":
        return 1
    registry = _open(first[0])
    loaded: OrderedDict[tuple[str, int], LoadedVersion] = OrderedDict()
    try:
        while (frame := read_frame(read)) is not None:
            header, payload = frame
            try:
                reply, arrays = _score(registry, loaded, header, payload)
            except ModelportError as exc:
                kind = type(exc).__name__ if type(exc).__name__ in _ERRORS else "RuntimeFailure"
                reply, arrays = {"error": kind, "message": str(exc)}, []
            except Exception as exc:  # one bad call must not end the process
                from modelport.errors import brief

                reply, arrays = {"error": "RuntimeFailure", "message": f"the model failed: {brief(exc)}"}, []
            sink.write(encode(reply, arrays))
    finally:
        for version in loaded.values():
            version.close()
        registry.close()
    return 0


def _open(config: dict[str, Any]) -> Registry:
    from modelport.monitoring.metrics import disable
    from modelport.registry.artifacts import open_artifact_store
    from modelport.registry.database import Database
    from modelport.registry.service import Registry
    from modelport.registry.store import RegistryStore
    from modelport.settings import Settings

    disable()  # the worker owns /metrics
    settings = Settings(
        home=Path(config["home"]), database_url=config["database_url"], artifact_url=config["artifact_url"]
    )
    database = Database(settings.resolved_database_url)
    return Registry(settings, RegistryStore(database), open_artifact_store(settings))


def _score(
    registry: Registry,
    loaded: OrderedDict[tuple[str, int], LoadedVersion],
    header: dict[str, Any],
    payload: bytes,
) -> tuple[dict[str, Any], list[np.ndarray]]:
    from modelport.registry.names import ModelRef

    key = (str(header["model"]), int(header["version"]))
    version = loaded.get(key)
    if version is None:
        version = registry.load(ModelRef(key[0], version=key[1]))  # digest verified
        loaded[key] = version
        while len(loaded) > MAX_LOADED:
            loaded.popitem(last=False)[1].close()
    loaded.move_to_end(key)
    if header.get("op") == "load":
        return {"loaded": True}, []
    names = [str(n) for n in header["names"]]
    columns = decode_arrays(header, payload)
    started = time.perf_counter()
    prediction = version.predict_batch(dict(zip(names, columns, strict=True)))
    reply: dict[str, Any] = {"outputs": [], "seconds": time.perf_counter() - started}
    arrays: list[np.ndarray] = []
    for name in ("labels", "probabilities", "values"):
        part = getattr(prediction, name)
        if part is not None:
            reply["outputs"].append(name)
            arrays.append(np.asarray(part, dtype=object) if name == "labels" else np.asarray(part))
    return reply, arrays


if __name__ == "__main__":
    raise SystemExit(_child())
