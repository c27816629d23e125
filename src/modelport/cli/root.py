"""The ``modelport`` command group: its help lists the commands by task, and its global options are
accepted before or after the sub-command.

- :data:`TASKS` is the table of contents of ``modelport --help``: every command under one task, in the
  order a newcomer meets them (``init`` first). ``tests/cli/test_guidance.py`` fails when a command is
  missing from it.
- ``--home PATH`` may follow the sub-command (``modelport models --home /srv/registry``); it is moved in
  front before parsing. ``--json`` may precede it (``modelport --json models``); it is moved behind,
  to the command that prints. Nothing after a ``--`` is touched.

The help is click's plain text, not Typer's rich panels: rendering those imports ~0.1 s of rich and
markdown modules, a third of the time ``modelport --help`` may take (docs/performance.md).
"""

from __future__ import annotations

from typing import Any

from typer.core import TyperGroup

__all__ = ["TASKS", "RootGroup", "hoist_global_options"]

TASKS: dict[str, tuple[str, ...]] = {
    "Registry": ("init", "register", "import", "models", "versions", "show", "label", "predict", "export"),
    "Batch": ("score", "jobs"),
    "Serving": ("serve", "policy"),
    "Releases": ("alias", "release", "approvals", "retention", "gc"),
    "Access": ("keys", "usage", "webhooks"),
    "Monitoring": ("log-policy", "predictions", "drift", "profile", "feedback"),
    "Governance": ("validate", "reports", "doctor", "audit", "evidence", "privacy"),
}

_ORDER = [name for names in TASKS.values() for name in names]


def hoist_global_options(args: list[str]) -> list[str]:
    """``args`` with ``--home PATH`` moved before the sub-command and a leading ``--json`` moved after
    it (see the module docstring). Everything else keeps its place."""
    end = args.index("--") if "--" in args else len(args)
    head, tail = args[:end], args[end:]
    front: list[str] = []
    rest: list[str] = []
    json_flag = False
    seen_command = False
    i = 0
    while i < len(head):
        arg = head[i]
        if arg == "--home" and i + 1 < len(head):
            front += head[i : i + 2]
            i += 2
            continue
        if arg.startswith("--home="):
            front.append(arg)
        elif arg == "--json" and not seen_command:
            json_flag = True
        else:
            seen_command = seen_command or not arg.startswith("-")
            rest.append(arg)
        i += 1
    return front + rest + (["--json"] if json_flag else []) + tail


class RootGroup(TyperGroup):
    """The root group: commands listed and shown by task; global options anywhere."""

    # Contexts and formatters are Typer's own copies of click's classes (typer._click): typed loosely.
    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        return super().parse_args(ctx, hoist_global_options(args))

    def list_commands(self, ctx: Any) -> list[str]:
        known = super().list_commands(ctx)
        return [name for name in _ORDER if name in known] + [n for n in known if n not in _ORDER]

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        commands: list[tuple[str, Any]] = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                commands.append((name, command))
        if not commands:
            return
        width = max(len(name) for name, _ in commands)
        limit = formatter.width - 6 - width
        listed: set[str] = set()
        for task, names in [*TASKS.items(), ("Other", tuple(n for n, _ in commands if n not in _ORDER))]:
            rows = [
                (name.ljust(width), command.get_short_help_str(limit))
                for name, command in commands
                if name in names and name not in listed
            ]
            listed.update(name for name, _ in commands if name in names)
            if rows:
                with formatter.section(task):
                    formatter.write_dl(rows)
