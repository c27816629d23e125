"""CLI commands of issue 18 (being built): wired by cli/main.py."""

from __future__ import annotations

from collections.abc import Callable

import typer

from modelport.registry.service import Registry

__all__ = ["register_commands"]


def register_commands(app: typer.Typer, open_registry: Callable[[], Registry]) -> None:
    """Nothing yet."""
