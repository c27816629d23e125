"""Progress for people: the core's steps (:mod:`modelport.progress`) drawn with rich on stderr, only
when stderr is a terminal. In a pipe, a CI log or a test nothing is drawn, so stdout (and ``--json``
output) is exactly what the command prints and stderr holds only warnings and errors.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from modelport.cli.output import error_console
from modelport.progress import Progress, no_progress

__all__ = ["shown_progress"]


@contextmanager
def shown_progress(title: str) -> Iterator[Progress]:
    """A :class:`~modelport.progress.Progress` for the duration of one command: a spinner with the
    current step, its count when it has one, and the time spent — cleared when the command ends.
    ``title`` prefixes every step (``register credit``)."""
    if not error_console.is_terminal:
        yield no_progress
        return
    from rich.progress import BarColumn, ProgressColumn, SpinnerColumn, Task, TextColumn, TimeElapsedColumn
    from rich.progress import Progress as Bar
    from rich.text import Text

    class Count(ProgressColumn):
        """``3/12`` when the step counts items, nothing when it does not."""

        def render(self, task: Task) -> Text:
            counted = task.total is not None and task.fields.get("counted", False)
            return Text(f"{task.completed:.0f}/{task.total:.0f}" if counted else "")

    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}", markup=False),
        BarColumn(bar_width=20),
        Count(),
        TimeElapsedColumn(),
    )
    with Bar(*columns, console=error_console, transient=True) as bar:
        task = bar.add_task(title, total=None)

        def report(step: str, done: int | None = None, total: int | None = None) -> None:
            # rich keeps a task's total when given None: a step without a count says so in a field,
            # so "writing OUTPUT" after "scoring 40/40" shows no count rather than 0/40
            counted = done is not None and total is not None
            bar.update(
                task, description=f"{title}: {step}", completed=done or 0, total=total, counted=counted
            )

        yield report
