"""A steady load that counts every outcome: threads sending inference requests until stopped."""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx

from tests.scaleout.cluster import INFER, bearer

__all__ = ["Load"]


@dataclass
class Load:
    """``threads`` clients, each sending one request after another (kept-alive connection) to ``url``
    until :meth:`stop`, or ``limit`` seconds at most. Every answer and every transport error counts."""

    url: str
    token: str
    threads: int = 2
    limit: float = 60.0
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    versions: Counter[str] = field(default_factory=Counter)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _workers: list[threading.Thread] = field(default_factory=list)

    def start(self) -> Load:
        deadline = time.monotonic() + self.limit
        for _ in range(self.threads):
            thread = threading.Thread(target=self._run, args=(deadline,), daemon=True)
            thread.start()
            self._workers.append(thread)
        return self

    def _run(self, deadline: float) -> None:
        with httpx.Client(base_url=self.url, headers=bearer(self.token), timeout=10) as client:
            while not self._stop.is_set() and time.monotonic() < deadline:
                try:
                    response = client.post("/v2/models/credit/infer", json=INFER)
                except httpx.TransportError as exc:
                    with self._lock:
                        self.errors[type(exc).__name__] += 1
                    continue
                with self._lock:
                    self.statuses[response.status_code] += 1
                    if response.status_code == 200:
                        self.versions[response.json()["model_version"]] += 1

    @property
    def ok(self) -> int:
        with self._lock:
            return self.statuses[200]

    @property
    def failed(self) -> int:
        with self._lock:
            return sum(n for status, n in self.statuses.items() if status != 200) + sum(self.errors.values())

    def stop(self) -> None:
        self._stop.set()
        for thread in self._workers:
            thread.join(timeout=30)

    def describe(self) -> str:
        return f"{self.ok} answered, {self.failed} failed ({dict(self.statuses)}, {dict(self.errors)})"
