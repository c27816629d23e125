"""The CLI tests' shared fixture: one click command for every in-process run of a module."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import typer

from modelport.cli.main import app


@pytest.fixture(autouse=True, scope="module")
def _click_command_built_once() -> Iterator[None]:
    """Typer builds the app's click command from the command functions' signatures at every call of
    ``main()`` (~10 ms: a third of a short command run in this process); the command is the same each
    time, so a module's in-process runs share one."""
    built = typer.main.get_command(app)
    build = typer.main.get_command

    def get_command(typer_instance: typer.Typer) -> Any:
        return built if typer_instance is app else build(typer_instance)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(typer.main, "get_command", get_command)
        yield
