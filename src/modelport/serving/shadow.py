"""Shadow traffic (docs/releases.md): copies of answered requests, scored on the shadow version by an
idle-priority child process (``serving/shadow_scorer.py``), in bounded memory.

The data plane offers a request after its primary answer is ready. The copy — references to the
request's tensors and the primary's answer — joins its group (release and tensor layout) at once, so
nothing per request outlives the request but numpy arrays, which the garbage collector does not track
(holding a few objects per copy for 50 ms had tripled the collections and caused 75 ms full ones). At
most ``capacity`` copies wait or are being scored; beyond that a copy is dropped and counted, never
blocking and never delaying an answer. Every ``tick`` seconds a task concatenates each group's tensors
and writes them to the scorer as one frame; the scorer replies with counts (scored, failed, scoring
time, predicted classes, agreement with the primary), which go into the release's counters like the
primary's. The scorer also logs the shadow's answers under the shadow's version and the request's id
when the model logs predictions, so feedback labels score the shadow too.

The scorer starts when a release with a shadow is first seen (or a copy arrives), gets ``warm`` for
each shadow version so the first copies do not wait for a load, and ends when no release has a shadow
or the worker stops. If it dies, the copies it held are counted as dropped and it is started again at
most every ``RESTART_SECONDS``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np

from modelport.releases.policy import Release
from modelport.releases.stats import ReleaseCounters
from modelport.runtimes.base import Prediction
from modelport.serving.shadow_scorer import FRAME, MAX_HEADER, encode, scorer_config, start_child
from modelport.serving.tensors import Tensor

if TYPE_CHECKING:
    from modelport.serving.dataplane import DataPlane

__all__ = ["ShadowMirror"]

log = logging.getLogger("modelport.serving")

RESTART_SECONDS = 5.0
OFFLOAD_ROWS = 5_000  # a tick's copies of at least this many rows are encoded on a thread
CLOSE_SECONDS = 10.0  # how long a stopping worker waits for the scorer's last replies


class _Group:
    """The copies of one tick for one release and tensor layout, as per-tensor lists of arrays."""

    __slots__ = ("key_ids", "labels", "model", "parts", "release", "request_ids", "rows", "specs", "values")

    def __init__(self, model: str, release: Release, inputs: list[Tensor]) -> None:
        self.model = model
        self.release = release
        self.specs = [(t.name, t.datatype) for t in inputs]
        self.parts: list[list[np.ndarray]] = [[] for _ in inputs]
        self.labels: list[np.ndarray] = []
        self.values: list[np.ndarray] = []
        self.rows: list[int] = []
        self.request_ids: list[str] = []
        self.key_ids: list[str] = []


class _Ledger:
    """The copies one scorer process holds (sent, not yet answered), per release."""

    __slots__ = ("by_release", "total")

    def __init__(self) -> None:
        self.by_release: defaultdict[str, int] = defaultdict(int)
        self.total = 0

    def sent(self, release_id: str, copies: int) -> None:
        self.by_release[release_id] += copies
        self.total += copies

    def answered(self, release_id: str, copies: int) -> None:
        self.by_release[release_id] = max(0, self.by_release[release_id] - copies)
        self.total = max(0, self.total - copies)


class ShadowMirror:
    def __init__(
        self,
        plane: DataPlane,
        counters: ReleaseCounters,
        config: dict[str, Any] | None = None,
        *,
        capacity: int = 1024,
        tick: float = 0.05,
    ) -> None:
        self.plane = plane
        self.counters = counters
        self.config = config
        self.capacity = capacity
        self.tick = tick
        self.dropped = 0
        self._groups: dict[tuple[Any, ...], _Group] = {}
        self._held = 0  # copies gathered for the next frame
        self._ledger = _Ledger()  # copies with the running scorer
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._warmed: set[tuple[str, int]] = set()
        self._restart_after = 0.0
        self._starting: asyncio.Lock | None = None

    # -- on the request path ----------------------------------------------------------------------

    def offer(
        self,
        model: str,
        release: Release,
        inputs: list[Tensor],
        rows: int,
        primary: Prediction,
        request_id: str,
        key_id: str,
    ) -> None:
        """Keep a copy of an answered request for the next tick (never blocks; when ``capacity``
        copies are already waiting or being scored, drops it and counts the drop)."""
        if self._held + self._ledger.total >= self.capacity:
            self.dropped += 1
            self.counters.dropped(release.release_id)
            return
        key = (model, release.release_id, *[(t.name, t.datatype, t.data.shape[1:]) for t in inputs])
        group = self._groups.get(key)
        if group is None:
            group = self._groups[key] = _Group(model, release, inputs)
        for parts, tensor in zip(group.parts, inputs, strict=True):
            parts.append(tensor.data)
        if primary.labels is not None:
            group.labels.append(primary.labels)
        if primary.values is not None:
            group.values.append(primary.values)
        group.rows.append(rows)
        group.request_ids.append(request_id)
        group.key_ids.append(key_id)
        self._held += 1
        if self._task is None or self._task.done():
            self._wake = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._run())
        elif self._wake is not None and not self._wake.is_set():
            self._wake.set()

    # -- the tick -----------------------------------------------------------------------------------

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            if not self._held:
                self._wake.clear()
                await self._wake.wait()
            await asyncio.sleep(self.tick)  # let copies gather: one frame per group and tick
            await self._send_all()

    async def _send_all(self) -> None:
        groups, self._groups, self._held = self._groups, {}, 0
        if not groups:
            return
        process = await self._scorer()
        for group in groups.values():
            release_id = group.release.release_id
            copies = len(group.rows)
            if process is None or process.stdin is None or process.stdin.is_closing():
                self.dropped += copies
                self.counters.dropped(release_id, copies)
                continue
            try:
                # a large copy (a 300,000-row table) is encoded on a thread: probes keep answering
                big = sum(group.rows) >= OFFLOAD_ROWS
                frame = await asyncio.to_thread(self._frame, group) if big else self._frame(group)
            except Exception as exc:  # an unusual tensor layout must not take the worker down
                log.warning("shadow copy not sent (%s)", type(exc).__name__)
                self.counters.shadow(release_id, copies, 0.0, error=True)
                continue
            if process.stdin.is_closing():  # the scorer went away while the frame was made
                self.dropped += copies
                self.counters.dropped(release_id, copies)
                continue
            self._ledger.sent(release_id, copies)
            process.stdin.write(frame)

    def _frame(self, group: _Group) -> bytes:
        model = group.model
        arrays = [np.concatenate(parts) for parts in group.parts]
        header: dict[str, Any] = {
            "op": "score",
            "model": model,
            "version": group.release.shadow,
            "release_id": group.release.release_id,
            "tensors": [{"name": name, "datatype": datatype} for name, datatype in group.specs],
            "rows": group.rows,
        }
        if len(group.labels) == len(group.rows):
            header["labels"] = True
            arrays.append(np.concatenate(group.labels))
        if len(group.values) == len(group.rows):
            header["values"] = True
            arrays.append(np.concatenate(group.values))
        document = self.plane.pool.log_policies.get(model) if self.plane.predictions is not None else None
        if document is not None and document.get("sample_rate", 0) > 0:
            header.update(log=document, request_ids=group.request_ids, key_ids=group.key_ids)
        return encode(header, arrays)

    # -- the scorer process ---------------------------------------------------------------------------

    def sync(self, releases: Iterable[tuple[str, Release]]) -> None:
        """Follow the releases in force (called after each routing refresh): start the scorer and warm
        every new shadow version; stop the scorer when no release has a shadow any more."""
        shadows = {(model, release.shadow) for model, release in releases if release.shadow is not None}
        if shadows and not shadows <= self._warmed:
            asyncio.get_running_loop().create_task(self._warm(shadows))
        elif not shadows and self._process is not None and not self._held and not self._ledger.total:
            self._warmed.clear()
            asyncio.get_running_loop().create_task(self.close())

    async def _warm(self, shadows: set[tuple[str, int]]) -> None:
        process = await self._scorer()
        if process is None or process.stdin is None:
            return
        for model, number in sorted(shadows - self._warmed):
            process.stdin.write(encode({"op": "warm", "model": model, "version": number}, []))
            self._warmed.add((model, number))

    def _running(self) -> asyncio.subprocess.Process | None:
        """The scorer taking frames: started, not exited, its input not being closed."""
        process = self._process
        if process is None or process.returncode is not None:
            return None
        if process.stdin is None or process.stdin.is_closing():
            return None
        return process

    async def _scorer(self) -> asyncio.subprocess.Process | None:
        """The running scorer, started if needed (None while a failed one waits to be restarted). A
        scorer being stopped finishes on its own: its replies go to its own ledger."""
        if (running := self._running()) is not None:
            return running
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            if (running := self._running()) is not None:
                return running
            if time.monotonic() < self._restart_after:
                return None
            self._restart_after = time.monotonic() + RESTART_SECONDS
            try:
                process = await start_child("modelport.serving.shadow_scorer", self._config())
            except OSError as exc:
                log.warning("shadow scorer not started (%s)", type(exc).__name__)
                return None
            self._process = process
            self._warmed.clear()
            self._ledger = _Ledger()
            self._reader = asyncio.get_running_loop().create_task(self._read(process, self._ledger))
            return process

    def _config(self) -> dict[str, Any]:
        if self.config is not None:
            return self.config
        from modelport.settings import Settings

        return scorer_config(Settings(), log=self.plane.predictions is not None)

    async def _read(self, process: asyncio.subprocess.Process, ledger: _Ledger) -> None:
        """Fold the scorer's replies into the release counters until its output ends; then count what
        it still held as dropped."""
        stdout = process.stdout
        assert stdout is not None
        try:
            while True:
                head = await stdout.readexactly(FRAME.size)
                size, length = FRAME.unpack(head)
                if size > MAX_HEADER:
                    raise ValueError("reply too large")
                reply = _json(await stdout.readexactly(size))
                if length:
                    await stdout.readexactly(length)
                self._replied(reply, ledger)
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            try:  # its output ended: it has exited or is exiting
                await asyncio.wait_for(process.wait(), CLOSE_SECONDS)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
            for release_id, copies in ledger.by_release.items():
                if copies:
                    self.dropped += copies
                    self.counters.dropped(release_id, copies)
            ledger.by_release.clear()
            ledger.total = 0
            if self._process is process:
                self._process = None
                self._warmed.clear()

    def _replied(self, reply: dict[str, Any], ledger: _Ledger) -> None:
        release_id = str(reply["release_id"])
        ledger.answered(release_id, int(reply["copies"]))
        seconds = float(reply.get("seconds", 0.0))
        scored = int(reply.get("scored", 0))
        if scored:
            self.counters.shadow(
                release_id,
                scored,
                seconds,
                error=False,
                compared=int(reply.get("compared", 0)),
                agreed=int(reply.get("agreed", 0)),
                classes=[(str(label), int(count)) for label, count in reply.get("classes", [])],
            )
        failed = int(reply.get("failed", 0))
        if failed:
            self.counters.shadow(release_id, failed, seconds, error=True)

    async def close(self) -> None:
        """Send what was gathered, let the scorer answer it and write its log, and stop it."""
        if self._running() is not None:
            await self._send_all()
        else:  # no scorer to take them (none is started just to be stopped)
            for group in self._groups.values():
                self.dropped += len(group.rows)
                self.counters.dropped(group.release.release_id, len(group.rows))
            self._groups, self._held = {}, 0
        process, reader = self._process, self._reader
        if process is None:
            return
        if process.stdin is not None and not process.stdin.is_closing():
            process.stdin.close()
        if reader is not None:
            try:
                await asyncio.wait_for(asyncio.shield(reader), CLOSE_SECONDS)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                with contextlib.suppress(Exception):
                    await reader


def _json(text: bytes) -> dict[str, Any]:
    import json

    value = json.loads(text)
    if not isinstance(value, dict):
        raise ValueError("a reply is an object")
    return value
