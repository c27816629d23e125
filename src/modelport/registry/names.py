"""Names and references: the rules every adapter shares.

A model name is lower-case letters, digits, ``.``, ``_`` and ``-`` (starting and ending with a letter or
digit, no ``..``), so it is safe in a URL path segment and can never walk a file system. An alias name
matches ``[a-z][a-z0-9_-]{0,62}``: it starts with a letter, so it is never all digits and never
confused with a version number. ``latest`` is reserved: it is computed (the highest version), not set.

A reference is ``NAME``, ``NAME@ALIAS``, ``NAME@VERSION`` or ``NAME@LABEL``. A bare ``NAME`` is the
model's **default route**: ``NAME@production`` when the alias ``production`` is set, else
``NAME@latest`` — in serving, the CLI and the Python API alike (docs/registry.md). A label is a full
SemVer 2.0.0 version (``MAJOR.MINOR.PATCH[-PRE][+BUILD]``; a leading ``v`` is dropped): it always
contains ``.``, which version numbers and alias names never do — so the three kinds of selector cannot
be confused (docs/releases.md).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from modelport.errors import InvalidName

__all__ = [
    "DEFAULT_ALIAS",
    "LATEST",
    "MAX_VERSION",
    "ModelRef",
    "check_alias_name",
    "check_label",
    "check_model_name",
    "check_version_number",
    "is_label",
    "is_model_name",
    "parse_ref",
]

LATEST = "latest"
DEFAULT_ALIAS = "production"  # a bare NAME means this alias when it is set, else LATEST
_MODEL_NAME = re.compile(r"[a-z0-9](?:[a-z0-9._-]{0,98}[a-z0-9])?")
_ALIAS_NAME = re.compile(r"[a-z][a-z0-9_-]{0,62}")
_VERSION = re.compile(r"[1-9][0-9]{0,9}")
# semver.org's grammar: numeric parts without leading zeros, dot-separated pre-release and build parts
_NUMERIC = r"(?:0|[1-9][0-9]*)"
_PRE_PART = r"(?:0|[1-9][0-9]*|[0-9]*[A-Za-z-][0-9A-Za-z-]*)"
_SEMVER = re.compile(
    rf"{_NUMERIC}\.{_NUMERIC}\.{_NUMERIC}(?:-{_PRE_PART}(?:\.{_PRE_PART})*)?(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?"
)
MAX_VERSION = 2**31 - 1  # the database column is a 32-bit integer


def _shown(value: str) -> str:
    """A user-supplied string, quoted and cut short, safe to echo in an error."""
    text = value if len(value) <= 80 else value[:77] + "..."
    return repr(text)


def is_model_name(name: str) -> bool:
    """Whether ``name`` follows the model naming rules (without raising)."""
    return bool(_MODEL_NAME.fullmatch(name))


def check_model_name(name: str) -> str:
    """Return ``name`` if it is a valid model name, else raise :class:`InvalidName` saying why."""
    if not isinstance(name, str) or not name:
        raise InvalidName("model name is empty")
    if any(ch in name for ch in "/\\\0") or ".." in name:
        raise InvalidName(f"model name {_shown(name)} contains path characters ('/', '\\', '..' or NUL)")
    if not _MODEL_NAME.fullmatch(name):
        raise InvalidName(
            f"model name {_shown(name)} is invalid: use 1-100 lower-case letters, digits, '.', '_' or '-', "
            "starting and ending with a letter or digit"
        )
    return name


def check_alias_name(alias: str, *, settable: bool = True) -> str:
    """Return ``alias`` if it is a valid alias name. ``latest`` is refused when ``settable``."""
    if not isinstance(alias, str) or not alias:
        raise InvalidName("alias name is empty")
    if alias.isdigit():
        raise InvalidName(f"alias {_shown(alias)} is all digits: that would read as a version number")
    if any(ch in alias for ch in "/\\\0") or ".." in alias:
        raise InvalidName(f"alias {_shown(alias)} contains path characters ('/', '\\', '..' or NUL)")
    if not _ALIAS_NAME.fullmatch(alias):
        raise InvalidName(
            f"alias {_shown(alias)} is invalid: it must match [a-z][a-z0-9_-]{{0,62}} "
            "(a lower-case letter, then up to 62 lower-case letters, digits, '_' or '-')"
        )
    if settable and alias == LATEST:
        raise InvalidName("alias 'latest' is reserved: it always means the highest version")
    return alias


def is_label(selector: str) -> bool:
    """Whether a selector is meant as a label: it contains ``.`` (numbers and aliases never do)."""
    return "." in selector


def check_label(label: str) -> str:
    """The label in canonical form (no leading ``v``), or :class:`InvalidName` saying why not."""
    if not isinstance(label, str) or not label:
        raise InvalidName("version label is empty")
    text = label[1:] if label[:1] in ("v", "V") else label
    if len(text) > 100 or not _SEMVER.fullmatch(text):
        raise InvalidName(
            f"version label {_shown(label)} is not a full semantic version: use MAJOR.MINOR.PATCH, "
            "e.g. 2.1.0 or 2.1.0-rc.1 (three numbers; a bare number is a version number)"
        )
    return text


def check_version_number(number: int) -> int:
    """Return ``number`` if it can be a version number (1 … 2,147,483,647)."""
    if isinstance(number, bool) or not isinstance(number, int) or not 1 <= number <= MAX_VERSION:
        raise InvalidName(f"version numbers run from 1 to {MAX_VERSION:,}; got {number!r:.40}")
    return number


@dataclass(frozen=True, slots=True)
class ModelRef:
    """A parsed reference: a model name plus at most one selector — a version number, an alias or a
    label. With none (``ModelRef(name)``, written ``NAME``) it is the model's default route:
    :data:`DEFAULT_ALIAS` when that alias is set, else the latest version."""

    name: str
    version: int | None = None
    alias: str | None = None
    label: str | None = None

    def __post_init__(self) -> None:
        if sum(part is not None for part in (self.version, self.alias, self.label)) > 1:
            raise InvalidName(f"a reference selects by one of version, alias or label, not several: {self!r}")

    @property
    def selector(self) -> str | None:
        """What follows ``@``: ``"3"``, ``"staging"``, ``"latest"`` or ``"2.1.0"``; ``None`` for the
        default route (what serving's ``resolve`` takes)."""
        if self.version is not None:
            return str(self.version)
        return self.label if self.label is not None else self.alias

    def __str__(self) -> str:
        selector = self.selector
        return self.name if selector is None else f"{self.name}@{selector}"


def parse_ref(text: str) -> ModelRef:
    """Parse ``NAME``, ``NAME@ALIAS``, ``NAME@VERSION`` or ``NAME@LABEL``. ``NAME`` alone is the default
    route (no selector); ``NAME@latest`` is always the highest version."""
    if not isinstance(text, str) or not text:
        raise InvalidName("model reference is empty: use NAME, NAME@ALIAS, NAME@VERSION or NAME@LABEL")
    name, sep, selector = text.partition("@")
    check_model_name(name)
    if not sep:
        return ModelRef(name)
    if not selector:
        raise InvalidName(
            f"reference {_shown(text)} ends with '@': add an alias, a version number or a label"
        )
    if selector.isdigit():
        if not _VERSION.fullmatch(selector) or int(selector) > MAX_VERSION:
            raise InvalidName(f"reference {_shown(text)}: version numbers run from 1 to {MAX_VERSION:,}")
        return ModelRef(name, version=int(selector))
    if is_label(selector):
        return ModelRef(name, label=check_label(selector))
    return ModelRef(name, alias=check_alias_name(selector, settable=False))
