"""Release policies on an alias (docs/releases.md): what they are, how they parse, how a request picks
its arm. Pure: no I/O, no HTTP; the registry stores them and the data plane applies them.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
from dataclasses import dataclass, field
from typing import Any

from modelport.errors import InvalidInput

__all__ = ["AutoRollback", "Release", "Sticky", "parse_weight"]

PRIMARY, CANARY, SHADOW, UNKEYED = "primary", "canary", "shadow", "unkeyed"
ARMS = (PRIMARY, CANARY, SHADOW)
_HEADER = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,99}")
_FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]{0,99}")
_UNIT = float(1 << 64)


def parse_weight(value: Any) -> float:
    """A canary weight: a percentage above 0 and below 100, at most two decimals."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise InvalidInput("the canary weight is a percentage, e.g. 10 or 2.5")
    try:
        weight = float(value)
    except ValueError:
        raise InvalidInput(f"the canary weight {str(value)[:20]!r} is not a number") from None
    if not math.isfinite(weight) or not 0 < weight < 100:
        raise InvalidInput("the canary weight is a percentage above 0 and below 100 (promote for 100)")
    if round(weight, 2) != weight:
        raise InvalidInput("the canary weight has at most two decimals (e.g. 0.25)")
    return weight


@dataclass(frozen=True, slots=True)
class Sticky:
    """Where a request's assignment key comes from: a header or an input field of its first row."""

    source: str  # "header" or "field"
    name: str

    @classmethod
    def parse(cls, text: str, features: list[str] | None = None) -> Sticky:
        """``header:NAME``, ``field:NAME``, or a bare name: a field when the model has a feature of that
        name, else a header."""
        if not isinstance(text, str) or not text.strip():
            raise InvalidInput("--sticky-by needs header:NAME or field:NAME")
        source, sep, name = text.strip().partition(":")
        if not sep:
            source, name = ("field" if features is not None and text in features else "header"), text
        source = source.lower()
        if source == "header" and _HEADER.fullmatch(name):
            return cls("header", name.lower())
        if source == "field" and _FIELD.fullmatch(name):
            if features is not None and name not in features:
                raise InvalidInput(f"--sticky-by field:{name}: the model has no input named {name!r}")
            return cls("field", name)
        raise InvalidInput(
            f"--sticky-by {text[:60]!r}: use header:NAME (letters, digits, '-') or field:NAME (an input name)"
        )

    def __str__(self) -> str:
        return f"{self.source}:{self.name}"


@dataclass(frozen=True, slots=True)
class AutoRollback:
    """Roll the release back when the canary's error rate or p99 over the last ``window`` seconds
    exceeds a bound, once it has served ``min_requests`` in that window."""

    max_error_rate: float | None = None
    max_p99_ms: float | None = None
    window: float = 60.0
    min_requests: int = 100

    @classmethod
    def parse(cls, text: str) -> AutoRollback:
        """``error_rate=0.05,p99_ms=50,window=60,min_requests=100`` (at least one bound)."""
        values: dict[str, float] = {}
        for part in text.split(","):
            key, sep, raw = part.strip().partition("=")
            if not sep or key not in {"error_rate", "p99_ms", "window", "min_requests"}:
                raise InvalidInput(
                    f"--auto-rollback {text[:80]!r}: use error_rate=0.05,p99_ms=50,window=60,min_requests=100"
                )
            try:
                values[key] = float(raw)
            except ValueError:
                raise InvalidInput(f"--auto-rollback: {key} must be a number, not {raw[:20]!r}") from None
        return cls.of(values)

    @classmethod
    def of(cls, document: dict[str, Any]) -> AutoRollback:
        known = {"error_rate", "p99_ms", "window", "min_requests"}
        if not isinstance(document, dict) or set(document) - known:
            raise InvalidInput(f"auto_rollback takes {', '.join(sorted(known))}")
        for key, value in document.items():
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise InvalidInput(f"auto_rollback.{key} must be a number")
        rule = cls(
            max_error_rate=None if document.get("error_rate") is None else float(document["error_rate"]),
            max_p99_ms=None if document.get("p99_ms") is None else float(document["p99_ms"]),
            window=float(document.get("window", 60.0)),
            min_requests=int(document.get("min_requests", 100)),
        )
        if rule.max_error_rate is None and rule.max_p99_ms is None:
            raise InvalidInput("auto_rollback needs a bound: error_rate and/or p99_ms")
        if rule.max_error_rate is not None and not 0 <= rule.max_error_rate < 1:
            raise InvalidInput("auto_rollback.error_rate is a fraction from 0 to below 1 (0.05 = 5 %)")
        if rule.max_p99_ms is not None and not 0 < rule.max_p99_ms <= 600_000:
            raise InvalidInput("auto_rollback.p99_ms is above 0 and at most 600000")
        if not 10 <= rule.window <= 86_400:
            raise InvalidInput("auto_rollback.window is 10 to 86400 seconds")
        if not 1 <= rule.min_requests <= 10_000_000:
            raise InvalidInput("auto_rollback.min_requests is 1 to 10000000")
        return rule

    def to_dict(self) -> dict[str, Any]:
        document: dict[str, Any] = {"window": self.window, "min_requests": self.min_requests}
        if self.max_error_rate is not None:
            document["error_rate"] = self.max_error_rate
        if self.max_p99_ms is not None:
            document["p99_ms"] = self.max_p99_ms
        return document

    def exceeded(self, requests: int, errors: int, p99_ms: float | None) -> str | None:
        """Why the canary should be rolled back, or None."""
        if requests < self.min_requests:
            return None
        if self.max_error_rate is not None and errors / requests > self.max_error_rate:
            return f"error rate {errors / requests:.4f} over {self.max_error_rate:g} ({errors}/{requests})"
        if self.max_p99_ms is not None and p99_ms is not None and p99_ms > self.max_p99_ms:
            return f"p99 {p99_ms:.1f} ms over {self.max_p99_ms:g} ms"
        return None


@dataclass(frozen=True, slots=True)
class Release:
    """A running release on one alias: its primary (the alias's version) plus a canary and/or a
    shadow. ``release_id`` names it in counts and audit records."""

    release_id: str
    primary: int
    canary: int | None = None
    weight: float = 0.0
    sticky: Sticky | None = None
    shadow: int | None = None
    auto_rollback: AutoRollback | None = None
    started_at: str = ""
    started_by: str = ""
    _threshold: int = field(default=0, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_threshold", int(self.weight / 100 * _UNIT))

    def arm(self, model: str, alias: str, key: str | None) -> str:
        """``canary`` or ``primary`` for one request; ``unkeyed`` (served by the primary) when the
        release is sticky and the request has no key."""
        if self.canary is None:
            return PRIMARY
        if self.sticky is None:
            return CANARY if random.random() * 100 < self.weight else PRIMARY  # noqa: S311 - a traffic split, not a secret
        if key is None:
            return UNKEYED
        digest = hashlib.blake2b(
            f"{model}\0{alias}\0{self.canary}\0{key}".encode(errors="surrogatepass"), digest_size=8
        ).digest()
        return CANARY if int.from_bytes(digest, "big") < self._threshold else PRIMARY

    def version_of(self, arm: str) -> int:
        return self.canary if arm == CANARY and self.canary is not None else self.primary

    def state(self) -> dict[str, Any]:
        """The alias's state as history and the API show it."""
        return {
            "version": self.primary,
            "release_id": self.release_id,
            "canary": self.canary,
            "weight": self.weight if self.canary is not None else None,
            "sticky_by": None if self.sticky is None else str(self.sticky),
            "shadow": self.shadow,
            "auto_rollback": None if self.auto_rollback is None else self.auto_rollback.to_dict(),
            "started_at": self.started_at,
            "started_by": self.started_by,
        }
