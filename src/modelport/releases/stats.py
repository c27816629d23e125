"""Numbers per release arm (docs/releases.md): counted in each worker without I/O, added to the
``release_stats`` table about once a second, summarised for ``release status`` and automatic rollback.

Latency goes into log-spaced buckets 5 % apart (bucket ``i`` holds ``[10 µs × 1.05^i, 10 µs ×
1.05^(i+1))``), so a percentile read back from the buckets is within 5 % of the true one, and the
counts of any number of workers and replicas simply add up.
"""

from __future__ import annotations

import math
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from modelport.releases.policy import CANARY, PRIMARY, SHADOW, UNKEYED

__all__ = ["BUCKET_SECONDS", "ReleaseCounters", "latency_bucket", "summarise"]

BUCKET_SECONDS = 10
_BASE = 1e-5
_RATIO = 1.05
_LOG_RATIO = math.log(_RATIO)
MAX_CLASS_KEYS = 50  # distinct predicted labels counted per arm and bucket (the rest as "other")


def latency_bucket(seconds: float) -> int:
    return max(0, int(math.log(max(seconds, _BASE) / _BASE) / _LOG_RATIO))


def bucket_upper_ms(index: int) -> float:
    return _BASE * _RATIO ** (index + 1) * 1000


class _Arm:
    """One arm's counts in one 10-second bucket (plain attributes: a request costs a few µs)."""

    __slots__ = ("agreed", "classes", "compared", "dropped", "errors", "latency", "requests")

    def __init__(self) -> None:
        self.requests = 0
        self.errors = 0
        self.compared = 0
        self.agreed = 0
        self.dropped = 0
        self.latency: defaultdict[int, int] = defaultdict(int)
        self.classes: defaultdict[Any, int] = defaultdict(int)


class ReleaseCounters:
    """One worker's counts since the last flush. Counting is attribute arithmetic on the event loop;
    :meth:`take` swaps the table out under a lock and turns it into rows for the database."""

    def __init__(self) -> None:
        self._arms: dict[tuple[str, str, int], _Arm] = {}
        self._lock = threading.Lock()

    def _arm(self, release_id: str, arm: str) -> _Arm:
        key = (release_id, arm, int(time.time()) // BUCKET_SECONDS)
        found = self._arms.get(key)
        if found is None:
            found = self._arms[key] = _Arm()
        return found

    def request(
        self,
        release_id: str,
        arm: str,
        seconds: float,
        *,
        error: bool,
        labels: Any = None,
        label_counts: Mapping[Any, int] | None = None,
    ) -> None:
        """Count one request of an arm; its predicted ``labels`` — or, already counted (a large
        request's are counted on a thread), ``label_counts``."""
        counts = self._arm(release_id, arm)
        counts.requests += 1
        if error:
            counts.errors += 1
        counts.latency[latency_bucket(seconds)] += 1
        if label_counts is not None:
            classes = counts.classes
            for label, count in label_counts.items():
                classes[label] += count
        elif labels is not None:
            classes = counts.classes
            for label in labels.tolist() if hasattr(labels, "tolist") else labels:
                classes[label] += 1

    def shadow(
        self,
        release_id: str,
        requests: int,
        seconds: float,
        *,
        error: bool,
        compared: int = 0,
        agreed: int = 0,
        classes: Iterable[tuple[str, int]] = (),
    ) -> None:
        """One scored group of mirrored requests (``seconds`` is the group's scoring time, counted for
        each request in it; ``classes`` the shadow's predicted labels and their counts)."""
        counts = self._arm(release_id, SHADOW)
        counts.requests += requests
        if error:
            counts.errors += requests
        counts.latency[latency_bucket(seconds)] += requests
        counts.compared += compared
        counts.agreed += agreed
        for label, count in classes:
            counts.classes[label] += count

    def dropped(self, release_id: str, count: int = 1) -> None:
        self._arm(release_id, SHADOW).dropped += count

    def take(self) -> list[tuple[str, str, int, str, str, int]]:
        with self._lock:
            arms, self._arms = self._arms, {}
        rows: list[tuple[str, str, int, str, str, int]] = []
        for (release_id, arm, bucket), counts in arms.items():
            for metric in ("requests", "errors", "compared", "agreed", "dropped"):
                value = getattr(counts, metric)
                if value:
                    rows.append((release_id, arm, bucket, metric, "", value))
            for index, value in counts.latency.items():
                rows.append((release_id, arm, bucket, "latency", str(index), value))
            classes: dict[str, int] = defaultdict(int)
            for label, value in counts.classes.items():
                text = label.decode(errors="replace") if isinstance(label, bytes) else str(label)
                classes[text[:100]] += value
            for text, value in sorted(classes.items(), key=lambda kv: -kv[1])[:MAX_CLASS_KEYS]:
                rows.append((release_id, arm, bucket, "class", text, value))
        return rows

    def restore(self, rows: list[tuple[str, str, int, str, str, int]]) -> None:
        """Put counts back after a failed flush (the database was away)."""
        with self._lock:
            for release_id, arm, bucket, metric, key, value in rows:
                counts = self._arms.setdefault((release_id, arm, bucket), _Arm())
                if metric == "latency":
                    counts.latency[int(key)] += value
                elif metric == "class":
                    counts.classes[key] += value
                else:
                    setattr(counts, metric, getattr(counts, metric) + value)


def _percentile(histogram: dict[int, int], q: float) -> float | None:
    total = sum(histogram.values())
    if not total:
        return None
    rank = q * total
    seen = 0
    for index in sorted(histogram):
        seen += histogram[index]
        if seen >= rank:
            return round(bucket_upper_ms(index), 3)
    return round(bucket_upper_ms(max(histogram)), 3)


def summarise(rows: list[tuple[str, int, str, str, int]]) -> dict[str, dict[str, Any]]:
    """Per arm: requests, share (of primary + canary + unkeyed traffic), errors, error rate, p50 and
    p99 in ms, predicted-class shares, and for the shadow its agreement with the primary and drops."""
    arms: dict[str, dict[str, Any]] = {}
    for arm, _bucket, metric, key, count in rows:
        entry = arms.setdefault(
            arm,
            {
                "requests": 0,
                "errors": 0,
                "latency": defaultdict(int),
                "classes": defaultdict(int),
                "compared": 0,
                "agreed": 0,
                "dropped": 0,
            },
        )
        if metric == "latency":
            entry["latency"][int(key)] += count
        elif metric == "class":
            entry["classes"][key] += count
        elif metric in ("requests", "errors", "compared", "agreed", "dropped"):
            entry[metric] += count
    served = sum(arms.get(a, {}).get("requests", 0) for a in (PRIMARY, CANARY, UNKEYED))
    result: dict[str, dict[str, Any]] = {}
    for arm in (PRIMARY, CANARY, UNKEYED, SHADOW):
        found = arms.get(arm)
        if found is None:
            continue
        entry = found
        requests = entry["requests"]
        classes = entry["classes"]
        counted = sum(classes.values())
        summary: dict[str, Any] = {
            "requests": requests,
            "errors": entry["errors"],
            "error_rate": None if not requests else round(entry["errors"] / requests, 6),
            "p50_ms": _percentile(entry["latency"], 0.50),
            "p99_ms": _percentile(entry["latency"], 0.99),
            "classes": {k: round(v / counted, 6) for k, v in sorted(classes.items())} if counted else {},
        }
        if arm != SHADOW:
            summary["share"] = None if not served else round(requests / served, 6)
        else:
            summary["compared"] = entry["compared"]
            summary["agreement"] = (
                None if not entry["compared"] else round(entry["agreed"] / entry["compared"], 6)
            )
            summary["dropped"] = entry["dropped"]
        result[arm] = summary
    return result
