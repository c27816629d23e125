"""Progress of long operations, told to whoever asks: the one extension point through which the
core reports the steps of a registration, a validation, ``doctor``, a local prediction or ``gc``.

A :class:`Progress` is any callable taking the step about to start, and optionally how many of a
known number of items are done::

    def show(step: str, done: int | None = None, total: int | None = None) -> None: ...

    registry.register(model, name="credit", sample=df, progress=show)

The core calls it before each step that can take a second or more, from the thread doing the work;
it must return quickly and never raise. :func:`no_progress` (the default everywhere) ignores it. The
CLI draws it on stderr when that is a terminal (``cli/progress.py``); the core knows nothing of how.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["Progress", "no_progress"]


class Progress(Protocol):
    def __call__(self, step: str, done: int | None = None, total: int | None = None) -> None:
        """``step`` starts now (the previous one, if any, is over); ``done`` of ``total`` items are
        finished when the step goes through a known number of them."""


def no_progress(step: str, done: int | None = None, total: int | None = None) -> None:
    """The default: nobody is listening."""
