"""Docs that cannot drift: the generated references must match the code."""

from __future__ import annotations

from pathlib import Path

from modelport.cli.reference import render_cli, render_settings

DOCS = Path(__file__).resolve().parents[1] / "docs"
FIX = "run `python -m modelport.cli.reference docs` to regenerate"


def test_cli_reference_is_current() -> None:
    assert (DOCS / "cli.md").read_text(encoding="utf-8") == render_cli(), FIX


def test_settings_reference_is_current() -> None:
    assert (DOCS / "settings.md").read_text(encoding="utf-8") == render_settings(), FIX


def test_every_docs_page_linked_from_readme() -> None:
    readme = (DOCS.parent / "README.md").read_text(encoding="utf-8")
    for page in sorted(DOCS.glob("*.md")):
        assert f"docs/{page.name}" in readme, f"README does not link docs/{page.name}"
