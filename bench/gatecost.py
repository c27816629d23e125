"""The cost of the access gate per request: authenticate, authorise, scope, rate/quota check, usage count.

    .venv/bin/python bench/gatecost.py

In-process, one thread, a consumer key without a rate (the common case) and one with a rate (its
bucket in the shared file). A temporary registry; nothing else runs. Compare with the per-request time
of the whole server in docs/performance.md.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from modelport.app import create_gate, open_registry
from modelport.security.store import KeyStore
from modelport.settings import Settings


async def _loop(gate, token: str, n: int) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    for _ in range(n):
        principal = await gate.admit(token, "127.0.0.1", "infer", "small")
        gate.count(principal, "small", rows=1, error=False, bytes_in=200, bytes_out=300)
    return (time.perf_counter() - start) / n * 1e6


def main() -> None:
    with tempfile.TemporaryDirectory() as home:
        settings = Settings(home=Path(home))
        registry = open_registry(settings, create=True)
        keys = KeyStore(registry.store)
        plain = keys.create(name="plain", role="consumer", models=["sm*"], actor="local:bench")
        limited = keys.create(name="limited", role="consumer", rate=1e9, actor="local:bench")
        assert plain is not None and limited is not None
        gate = create_gate(settings, registry)
        for label, token in (("no rate limit", plain[1]), ("rate limit (shared file bucket)", limited[1])):
            runs = [asyncio.run(_loop(gate, token, 100_000)) for _ in range(5)]
            print(
                f"{label}: median {statistics.median(runs):.2f} µs per request "
                f"(runs {', '.join(f'{r:.2f}' for r in runs)})"
            )
        registry.close()


if __name__ == "__main__":
    main()
