"""Retention: which versions ``modelport gc`` may archive (docs/releases.md). One pure function, so
the rule can be tested against a brute-force oracle (tests/releases/test_retention.py)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from modelport.errors import InvalidInput

__all__ = ["AliasState", "RetentionPolicy", "archivable"]


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    keep_last: int = 10
    keep_days: float = 90.0
    legal_hold: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.keep_last, bool) or not isinstance(self.keep_last, int) or self.keep_last < 1:
            raise InvalidInput("--keep-last is a whole number of at least 1")
        if self.keep_last > 1_000_000:
            raise InvalidInput("--keep-last is at most 1000000")
        if not math.isfinite(self.keep_days) or not 0 <= self.keep_days <= 36_500:
            raise InvalidInput("--keep-days is 0 to 36500 days")

    def to_dict(self) -> dict[str, Any]:
        return {"keep_last": self.keep_last, "keep_days": self.keep_days, "legal_hold": self.legal_hold}


@dataclass(frozen=True, slots=True)
class AliasState:
    """One row of an alias's history: from ``at`` (Unix seconds) until the alias's next row, it
    pointed at ``versions`` (primary, canary, shadow; empty once removed) — a half-open interval: a
    row replaced exactly at the window's start did not point into the window."""

    alias: str
    at: float
    versions: frozenset[int]


def archivable(
    versions: list[int],
    history: list[AliasState],
    pinned: set[int],
    policy: RetentionPolicy,
    now: float,
) -> list[int]:
    """The version numbers of one model that may be archived, ascending.

    Kept: all of them under legal hold; the newest ``keep_last``; ``pinned`` (what an alias, a running
    release or a pending change points at now); and every version an alias pointed at during any
    moment of the last ``keep_days`` days — a history row covers ``[at, next row of the same alias)``,
    the last one up to now (and beyond), so a pointer set long ago but moved away yesterday counts."""
    if policy.legal_hold:
        return []
    keep = set(sorted(versions)[-policy.keep_last :]) | pinned
    horizon = now - policy.keep_days * 86_400
    by_alias: dict[str, list[AliasState]] = {}
    for row in history:
        by_alias.setdefault(row.alias, []).append(row)
    for rows in by_alias.values():
        rows.sort(key=lambda r: r.at)
        for index, row in enumerate(rows):
            until = rows[index + 1].at if index + 1 < len(rows) else math.inf
            # [at, until) reaches into the window (or has not ended); a row replaced at the very
            # instant it was written never pointed anywhere
            if until > horizon and until > row.at:
                keep |= row.versions
    return sorted(set(versions) - keep)
