"""Docs that cannot drift: the generated references must match the code."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from modelport.cli.reference import render_cli, render_settings
from modelport.settings import Settings

DOCS = Path(__file__).resolve().parents[1] / "docs"
FIX = "run `python -m modelport.cli.reference docs` to regenerate"


def test_cli_reference_is_current() -> None:
    assert (DOCS / "cli.md").read_text(encoding="utf-8") == render_cli(), FIX


def test_settings_reference_is_current() -> None:
    assert (DOCS / "settings.md").read_text(encoding="utf-8") == render_settings(), FIX


def _documented_defaults() -> dict[str, str]:
    """``{field: default cell}`` read from the settings page's table."""
    rows = re.findall(r"^\| `MODELPORT_(\w+)` \| .*? \| (.*?) \| ", (DOCS / "settings.md").read_text(), re.M)
    return {variable.lower(): cell for variable, cell in rows}


def test_settings_reference_shows_real_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every default on the page is the value ``Settings()`` has: set as the environment variable, it
    gives that value back; ``unset`` is ``None``. (``allowed_hosts`` read `PydanticUndefined`: its
    default comes from a factory.)"""
    page = (DOCS / "settings.md").read_text(encoding="utf-8")
    assert "PydanticUndefined" not in page
    for variable in [name for name in os.environ if name.startswith("MODELPORT_")]:
        monkeypatch.delenv(variable)
    defaults = Settings()
    documented = _documented_defaults()
    assert sorted(documented) == sorted(Settings.model_fields)
    for name, cell in documented.items():
        if cell == "unset":
            assert getattr(defaults, name) is None, name
            continue
        assert cell.startswith("`") and cell.endswith("`"), (name, cell)
        monkeypatch.setenv(f"MODELPORT_{name.upper()}", cell.strip("`"))
    assert Settings() == defaults


def test_every_docs_page_linked_from_readme() -> None:
    readme = (DOCS.parent / "README.md").read_text(encoding="utf-8")
    for page in sorted(DOCS.glob("*.md")):
        assert f"docs/{page.name}" in readme, f"README does not link docs/{page.name}"
